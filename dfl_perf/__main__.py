"""``python -m dfl_perf`` runs the ``dfl-perf`` command."""

import sys

from dfl_perf.cli import main

sys.exit(main())

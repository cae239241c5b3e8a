"""Imported by the forkserver before it forks DFL's workers: DFL's backend package, if it imports.

multiprocessing's forkserver skips a preload module that raises ImportError but dies on any other
error; this wrapper turns every failure into "nothing preloaded", so each worker then imports what
it needs itself, as under spawn.
"""

try:
    import apps.DeepFaceLive.backend  # noqa: F401
except Exception:  # a checkout that cannot import here: the workers will say why, as under spawn
    pass

"""The package's shape, read from its source with ``ast``: no import cycle between module files
(imports inside functions and lazy ``importlib`` look-ups count too), and a bounded public API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent / "dfl_perf"

#: Cycles still on main, each with the engineer who removes it (issue 21). Empty this list; never grow it.
ALLOWED_CYCLES: List[Set[str]] = []

#: Packages whose ``__all__`` is the public API, and the most names they may export together (issue 21).
PUBLIC_PACKAGES = ("dfl_perf.lazy", "dfl_perf.devices", "dfl_perf.sessions", "dfl_perf.buffers", "dfl_perf.memory",
                   "dfl_perf.processor", "dfl_perf.monitor", "dfl_perf.adapters.deepfacelive", "dfl_perf.facepipe",
                   "dfl_perf.benchmark")
MAX_PUBLIC_NAMES = 80


def _module_files() -> Dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(name: str, level: int, module: str, is_package: bool) -> str:
    if not level:
        return name
    base = module.split(".")
    base = base[:len(base) - level + (1 if is_package else 0)]
    return ".".join(base + ([name] if name else []))


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def imports_of(module: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The package's modules that ``module`` imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    names: Set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, module, is_package)
            names.add(base)
            names.update("%s.%s" % (base, alias.name) for alias in node.names)  # a submodule imported by name
        elif isinstance(node, ast.Call) and _is_import_module(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            else:
                dynamic = True
    found = set()
    for name in names:
        while name and name not in modules:  # 'pkg.mod.attr' -> 'pkg.mod'
            name = name.rpartition(".")[0]
        found.add(name)
    if dynamic:  # a lazy table: its strings that name a module (in full, or a sibling's name) may be imported
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update({node.value, "%s.%s" % (package, node.value)} & set(modules))
    return {name for name in found if name.startswith("dfl_perf") and name != module}


def import_graph() -> Dict[str, Set[str]]:
    modules = _module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_checker_sees_cycles_through_function_level_and_lazy_imports(tmp_path):
    modules = {"dfl_perf.a": tmp_path / "a.py", "dfl_perf.b": tmp_path / "b.py", "dfl_perf.c": tmp_path / "c.py",
               "dfl_perf.d": tmp_path / "d.py"}
    modules["dfl_perf.a"].write_text("def f():\n    from dfl_perf.b import thing\n")
    modules["dfl_perf.b"].write_text("from . import a\n")
    modules["dfl_perf.c"].write_text("import importlib\n_LAZY = {'x': 'd'}\n"
                                     "def g(n):\n    return importlib.import_module('dfl_perf.' + _LAZY[n])\n")
    modules["dfl_perf.d"].write_text("import dfl_perf.c\n")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"dfl_perf.a": {"dfl_perf.b"}, "dfl_perf.b": {"dfl_perf.a"}, "dfl_perf.c": {"dfl_perf.d"},
                     "dfl_perf.d": {"dfl_perf.c"}}
    assert sorted(map(sorted, cycles(graph))) == [["dfl_perf.a", "dfl_perf.b"], ["dfl_perf.c", "dfl_perf.d"]]


def test_no_import_cycle_between_module_files():
    found = cycles(import_graph())
    unexpected = [sorted(c) for c in found if c not in ALLOWED_CYCLES]
    assert not unexpected, "import cycles (module files that import each other, directly or around a loop): %s" % (
        unexpected,)
    gone = [sorted(c) for c in ALLOWED_CYCLES if c not in found]
    assert not gone, "these allowed cycles are gone: remove them from ALLOWED_CYCLES: %s" % (gone,)


def test_the_sessions_build_path_is_layered():
    graph = import_graph()
    below = {"dfl_perf.sessions.build": {"dfl_perf.sessions.create", "dfl_perf.sessions.cached_create",
                                         "dfl_perf.sessions.cache", "dfl_perf.sessions.diskcache",
                                         "dfl_perf.sessions"},
             "dfl_perf.sessions.diskcache": {"dfl_perf.sessions.build", "dfl_perf.sessions.create",
                                             "dfl_perf.sessions.cache", "dfl_perf.sessions"},
             "dfl_perf.sessions.create": {"dfl_perf.sessions.cache", "dfl_perf.sessions"}}
    for module, forbidden in below.items():
        assert not graph[module] & forbidden, "%s imports a module above it: %s" % (module, graph[module] & forbidden)


#: What may import what, for sessions, buffers, memory and devices (issue 21): each may import the
#: modules named here (and its own package's); nothing else of dfl_perf.
LAYERS = {
    "dfl_perf.devices": {"dfl_perf.lazy", "dfl_perf.ortinfo", "dfl_perf.paths"},
    "dfl_perf.sessions": {"dfl_perf.devices", "dfl_perf.ortinfo", "dfl_perf.files", "dfl_perf.listeners",
                          "dfl_perf.paths"},
    "dfl_perf.buffers": {"dfl_perf.ortinfo", "dfl_perf.listeners"},
    # pools and caches by their protocol (bytes_held, trim, on_grow), never by import; the sampler for pressure
    "dfl_perf.memory": {"dfl_perf.devices", "dfl_perf.listeners", "dfl_perf.monitor.sampler"},
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_what_lies_below_it(layer):
    graph = import_graph()
    for module, imports in graph.items():
        if module != layer and not module.startswith(layer + "."):
            continue
        outside = {m for m in imports if m != layer and not m.startswith(layer + ".")} - LAYERS[layer]
        assert not outside, "%s imports %s, above or beside its layer" % (module, sorted(outside))


@pytest.mark.parametrize("low", ["dfl_perf.ortinfo", "dfl_perf.files", "dfl_perf.listeners", "dfl_perf.paths",
                                 "dfl_perf.lazy"])
def test_the_bottom_modules_import_no_other_layer(low):
    assert import_graph()[low] <= {"dfl_perf.lazy"}


def _export_counts(packages):
    return {name: len(importlib.import_module(name).__all__) for name in packages}


def test_public_packages_export_at_most_80_names():
    counts = _export_counts(PUBLIC_PACKAGES)
    assert sum(counts.values()) <= MAX_PUBLIC_NAMES, counts


def test_sessions_buffers_memory_devices_adapter_and_benchmark_export_at_most_42_names():
    counts = _export_counts(("dfl_perf.devices", "dfl_perf.sessions", "dfl_perf.buffers", "dfl_perf.memory",
                             "dfl_perf.adapters.deepfacelive", "dfl_perf.benchmark"))
    assert sum(counts.values()) <= 42, counts


def test_processor_monitor_facepipe_and_lazy_export_at_most_30_names():
    counts = _export_counts(("dfl_perf.processor", "dfl_perf.monitor", "dfl_perf.facepipe", "dfl_perf.lazy"))
    assert sum(counts.values()) <= 30, counts

"""Import-time patching: a ``sys.meta_path`` finder that patches DFL modules the moment they load.

Standard library only, so that the ``sitecustomize`` shipped for the launcher can import it in
every spawned DFL worker for almost nothing. The finder

- runs a patch function right after a target module (``xlib.onnxruntime``,
  ``modelhub.DFLive.DFMModel``, ``apps.DeepFaceLive.backend.BackendBase``) executes;
- defers the modules named in ``DFLConfig.lazy_imports`` (``onnxruntime``, ``onnx``, ``h5py``): ``import``
  binds a module object at once, its code runs at the first use of one of its names, so a worker
  that never builds a session never pays for them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

__all__ = ["ImportHook", "Patcher", "is_module_loaded"]

PatchFn = Callable[[Any], None]

_MISSING = object()
_REAL_LOADER = "__dfl_perf_real_loader__"
_deferred_lock = threading.RLock()


class Patcher:
    """Replaces attributes and remembers how to put every one of them back."""

    def __init__(self) -> None:
        self._undo: List[Tuple[Any, str, Any]] = []

    def replace(self, owner: Any, attr: str, value: Any) -> None:
        """Set ``owner.attr = value`` (module, class or object), recording the old value."""
        old = owner.__dict__.get(attr, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, attr, _MISSING)
        self._undo.append((owner, attr, old))
        setattr(owner, attr, value)

    def wrap(self, owner: Any, attr: str, make: Callable[[Any], Any]) -> Any:
        """Replace ``owner.attr`` with ``make(original)`` and return it.

        ``original`` is the unpatched attribute even while an earlier installation's wrapper is in
        place; the wrapper gets its docstring and ``dfl_perf_original``.
        """
        current = getattr(owner, attr)
        original = getattr(current, "dfl_perf_original", current)
        wrapper = make(original)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        wrapper.dfl_perf_original = original
        self.replace(owner, attr, wrapper)
        return wrapper

    def wrap_method(self, module: Any, class_name: str, method: str, make: Callable[[Any], Any], what: str) -> Any:
        """``wrap`` the method of ``module.class_name``; returns the class, or None (a warning naming ``what``)
        when the module has no such class or method."""
        cls = getattr(module, class_name, None)
        if cls is None or not callable(getattr(cls, method, None)):
            logging.getLogger("dfl_perf.adapters.deepfacelive").warning(
                "dfl_perf: %s has no %s.%s; %s not installed", module.__name__, class_name, method, what)
            return None
        self.wrap(cls, method, make)
        return cls

    def restore(self) -> None:
        """Undo every replacement, newest first."""
        while self._undo:
            owner, attr, old = self._undo.pop()
            if old is _MISSING:
                try:
                    delattr(owner, attr)
                except AttributeError:
                    pass
            else:
                setattr(owner, attr, old)


class _PatchingLoader(importlib.abc.Loader):
    """Wraps a module's real loader; calls ``after(module)`` once the module has executed."""

    def __init__(self, loader: Any, after: PatchFn) -> None:
        self._loader = loader
        self._after = after

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._after(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... for linecache and pkgutil
        return getattr(self._loader, name)


class _DeferredModule(types.ModuleType):
    """A module whose code has not run yet: it runs at the first look-up of a name it does not hold.

    ``__spec__``, ``__path__``, ``__file__`` and the other import attributes are set before that, so
    a second ``import x`` (which reads ``x.__spec__``) does not trigger it; the stdlib's LazyLoader
    runs the module at any attribute access, and therefore at every repeated import.
    """

    def __getattr__(self, name: str) -> Any:
        if _REAL_LOADER not in self.__dict__:  # still being set up by the import system
            raise AttributeError(name)
        if _asked_by_from_import():  # ``from package import submodule`` defers the submodule too
            submodule = _defer_submodule(self, name)
            if submodule is not None:
                return submodule
        load_deferred(self)
        return getattr(self, name)


def _asked_by_from_import() -> bool:
    """True when the import system is checking a name of ``from package import name``."""
    getframe = getattr(sys, "_getframe", None)
    if getframe is None:
        return False
    try:
        return getframe(2).f_code.co_name == "_handle_fromlist"
    except ValueError:
        return False


def _defer_submodule(parent: Any, name: str) -> Any:
    """``parent.name`` as a deferred pure-Python submodule, or None when there is no such file."""
    fullname = "%s.%s" % (parent.__name__, name)
    module = sys.modules.get(fullname)
    if module is None:
        search = parent.__dict__.get("__path__")
        if not search or name.startswith("__"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, list(search))
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None  # not a submodule, or an extension module (which cannot wait)
        loader = _DeferringLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = module
        loader.exec_module(module)
    parent.__dict__[name] = module
    return module


def load_deferred(module: Any) -> None:
    """Run a deferred module's code now, its deferred parent package first (no-op once it ran)."""
    with _deferred_lock:
        if type(module) is not _DeferredModule or _REAL_LOADER not in module.__dict__:
            return
        parent = sys.modules.get(module.__name__.rpartition(".")[0])
        if type(parent) is _DeferredModule:
            load_deferred(parent)
        loader = module.__dict__.pop(_REAL_LOADER)
        module.__class__ = types.ModuleType
        try:
            loader.exec_module(module)
        except BaseException:
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]
            raise


class _DeferringLoader(importlib.abc.Loader):
    """Creates a ``_DeferredModule`` and keeps the real loader for the moment it is needed."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        module = self._loader.create_module(spec)
        return module if module is not None else _DeferredModule(spec.name)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        if type(module) is _DeferredModule:
            module.__dict__[_REAL_LOADER] = self._loader
        else:  # an extension module cannot wait
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class ImportHook(importlib.abc.MetaPathFinder):
    """The finder: patch targets by module name, plus top-level modules to load lazily."""

    def __init__(self, targets: Dict[str, PatchFn], lazy: Sequence[str] = ()) -> None:
        self._targets = dict(targets)
        self._lazy = tuple(name for name in lazy if name and "." not in name)
        self._busy: Set[str] = set()
        self._lock = threading.RLock()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        after = self._targets.get(fullname)
        lazy = fullname in self._lazy
        if after is None and not lazy:
            self._load_lazy_parent(fullname)
            return None
        with self._lock:
            if fullname in self._busy:
                return None
            self._busy.add(fullname)
            try:
                spec = self._real_spec(fullname, path, target)
            finally:
                self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        if after is not None:
            spec.loader = _PatchingLoader(spec.loader, after)
        elif lazy:
            spec.loader = _DeferringLoader(spec.loader)
        return spec

    def _real_spec(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, ImportHook):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def _load_lazy_parent(self, fullname: str) -> None:
        """Importing ``pkg.sub`` of a deferred ``pkg`` runs ``pkg`` first, as a normal import would."""
        top = fullname.partition(".")[0]
        if top in self._lazy and "." in fullname:
            parent = sys.modules.get(top)
            if type(parent) is _DeferredModule:
                load_deferred(parent)


def is_module_loaded(name: str) -> bool:
    """True when module ``name`` is imported and its code has run (a deferred module not yet used is False)."""
    module = sys.modules.get(name)
    return module is not None and type(module) is not _DeferredModule


def remove_hooks(hooks: Sequence[Optional[ImportHook]]) -> None:
    """Take the given finders out of ``sys.meta_path``."""
    for hook in hooks:
        if hook is None:
            continue
        try:
            sys.meta_path.remove(hook)
        except ValueError:
            pass

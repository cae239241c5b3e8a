"""``install`` / ``uninstall``: put dfl_perf into a DeepFaceLive process (and, optionally, its children)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from dfl_perf.adapters.deepfacelive._hooks import ImportHook, Patcher, remove_hooks
from dfl_perf.adapters.deepfacelive.config import CONFIG_ENV, DFLConfig, config_from_env

__all__ = ["install", "uninstall", "is_installed", "installed_config", "session_records", "activate_from_env",
           "SITE_DIR", "FACTORY_NAME"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

FACTORY_NAME = "InferenceSession_with_device"
ORT_PACKAGE = "xlib.onnxruntime"
ORT_SUBMODULE = "xlib.onnxruntime.InferenceSession"
DFM_MODULE = "modelhub.DFLive.DFMModel"
BACKEND_MODULE = "apps.DeepFaceLive.backend.BackendBase"
CSW_MODULE = "xlib.mp.csw.CSWBase"
SHM_MODULE = "xlib.mp.MPSharedMemory"
MP_PACKAGE = "xlib.mp"
DFLIVE_PACKAGE = "modelhub.DFLive"
HEAP_MODULE = "xlib.mp.MPWeakHeap"
MERGER_MODULE = "apps.DeepFaceLive.backend.FaceMerger"
OUTPUT_MODULE = "apps.DeepFaceLive.backend.StreamOutput"
DETECTOR_MODULE = "modelhub.onnx.YoloV5Face.YoloV5Face"
PANEL_MODULE = "apps.DeepFaceLive.ui.widgets.QBackendPanel"

#: folder holding the ``sitecustomize.py`` that activates the adapter in spawned workers
SITE_DIR = str(Path(__file__).resolve().parent / "_site")

_lock = threading.RLock()
_state: Optional[_Installed] = None


class _Installed:
    """Everything one ``install()`` changed, so that ``uninstall()`` can put it back."""

    def __init__(self, config: DFLConfig) -> None:
        from dfl_perf.adapters.deepfacelive.factory import make_session_factory

        self.config = config
        self.threads = config.threads_per_session()
        self.factory = make_session_factory(config)
        self.original_factory: Optional[Callable[..., Any]] = None
        self.patcher = Patcher()
        self.hook: Optional[ImportHook] = None
        self.environ: Dict[str, Optional[str]] = {}
        self.memory = _memory_manager(config)

    def set_env(self, name: str, value: Optional[str]) -> None:
        if name not in self.environ:
            self.environ[name] = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def restore_env(self) -> None:
        for name, value in self.environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.environ.clear()


def _memory_manager(config: DFLConfig) -> Any:
    """This process's MemoryManager for ``config.memory_budget`` (None when off), sampling every 2 s."""
    if config.memory_budget is None:
        return None
    from dfl_perf.memory import MemoryManager
    from dfl_perf.memory._budget import parse_budget, resolve_budget

    budget = resolve_budget(parse_budget(config.memory_budget), "host")
    return MemoryManager(host_budget=budget, rss_limit=budget).start_sampling(interval=2.0)


# ----------------------------------------------------------------------------------------- patches

def _patch_ort(state: _Installed, package: Any) -> None:
    """Swap the factory on ``xlib.onnxruntime``, its submodule, and every module that imported it."""
    current = getattr(package, FACTORY_NAME, None)
    if current is None:
        log.warning("dfl_perf: %s has no %s; session factory not patched", ORT_PACKAGE, FACTORY_NAME)
        return
    original = getattr(current, "dfl_perf_original", current)
    state.original_factory = original
    state.factory.dfl_perf_original = original  # type: ignore[attr-defined]
    state.patcher.replace(package, FACTORY_NAME, state.factory)
    for module in list(sys.modules.values()):
        if module is None or module is package:
            continue
        if getattr(module, "__dict__", {}).get(FACTORY_NAME) is original:
            state.patcher.replace(module, FACTORY_NAME, state.factory)


def _patch_dfm(state: _Installed, module: Any) -> None:
    if state.config.fast_dfm:
        from dfl_perf.adapters.deepfacelive.dfm import patch_dfm_class

        patch_dfm_class(module, state.patcher, memory=state.memory)


def _patch_backend(state: _Installed, module: Any) -> None:
    if state.config.meter:
        from dfl_perf.adapters.deepfacelive.meter import patch_backend_module

        patch_backend_module(module, state.patcher, state.config)


def _patch_csw(state: _Installed, module: Any) -> None:
    if state.config.restart_in_process:
        from dfl_perf.adapters.deepfacelive.restart import patch_csw_module

        patch_csw_module(module, state.patcher)
    _patch_startup(state, module, "patch_worker_base")


def _patch_shared_memory(state: _Installed, module: Any) -> None:
    if state.config.lazy_heap:
        from dfl_perf.adapters.deepfacelive.lazy_heap import patch_shared_memory_module

        patch_shared_memory_module(module, state.patcher)


def _patch_start_method(state: _Installed, module: Any) -> None:
    from dfl_perf.adapters.deepfacelive.startup import process_role

    if state.config.forkserver and process_role() == "app":
        from dfl_perf.adapters.deepfacelive.forkserver import patch_mp_module

        patch_mp_module(module, state.patcher)


def _patch_startup(state: _Installed, module: Any, patch: str) -> None:
    if state.config.startup_folder():
        from dfl_perf.adapters.deepfacelive.startup import patch_connections, patch_worker_base

        {"patch_connections": patch_connections, "patch_worker_base": patch_worker_base}[patch](module, state.patcher)


def _patch_model_list(state: _Installed, module: Any) -> None:
    if state.config.remote_swap:
        from dfl_perf.adapters.deepfacelive.remote_swap import patch_model_list

        patch_model_list(module, state.patcher, state.config.remote_swap, state.config.remote_codec)
def _patch_heap(module: Any, patcher: Patcher, config: DFLConfig) -> None:
    from dfl_perf.adapters.deepfacelive.heap import patch_weak_heap_class

    patch_weak_heap_class(module, patcher, config)


def _patch_merger(module: Any, patcher: Patcher, config: DFLConfig) -> None:
    from dfl_perf.adapters.deepfacelive.merger import patch_merger_class

    patch_merger_class(module, patcher, config)


def _patch_output(module: Any, patcher: Patcher, config: DFLConfig) -> None:
    from dfl_perf.adapters.deepfacelive.output import patch_stream_output

    patch_stream_output(module, patcher, config)


def _patch_detector(module: Any, patcher: Patcher, config: DFLConfig) -> None:
    from dfl_perf.adapters.deepfacelive.detector import patch_yolo_class

    patch_yolo_class(module, patcher, config)


def _patch_panel(module: Any, patcher: Patcher, config: DFLConfig) -> None:
    from dfl_perf.adapters.deepfacelive.meter import patch_backend_panel

    patch_backend_panel(module, patcher, config)


def _optional_patches(config: DFLConfig) -> Dict[str, Callable[[Any, Patcher, DFLConfig], None]]:
    """module DFL loads -> the patch for it, for the patches the settings turn on."""
    chosen = {
        HEAP_MODULE: (config.frame_heap or bool(config.frame_heap_mb), _patch_heap),
        MERGER_MODULE: (config.fast_merge, _patch_merger),
        OUTPUT_MODULE: (config.fast_merge and config.merged_uint8, _patch_output),
        DETECTOR_MODULE: (config.fast_detector, _patch_detector),
        PANEL_MODULE: (config.meter, _patch_panel),
    }
    return {name: patch for name, (on, patch) in chosen.items() if on}


def _patcher_for(state: _Installed, patch: Callable[[Any, Patcher, DFLConfig], None]) -> Callable[[Any], None]:
    def apply(module: Any) -> None:
        patch(module, state.patcher, state.config)
        _govern_threads(state)
    return apply


def _govern_threads(state: _Installed) -> None:
    if state.config.thread_pools:
        from dfl_perf.adapters.deepfacelive.threads import apply_thread_pools

        apply_thread_pools(state.threads)


def _targets(state: _Installed) -> Dict[str, Callable[[Any], None]]:
    def backend(module: Any) -> None:
        _patch_backend(state, module)
        _patch_startup(state, module, "patch_connections")

    targets: Dict[str, Callable[[Any], None]] = {
        ORT_PACKAGE: lambda module: _patch_ort(state, module),
        DFM_MODULE: lambda module: _patch_dfm(state, module),
        BACKEND_MODULE: backend,
        CSW_MODULE: lambda module: _patch_csw(state, module),
        SHM_MODULE: lambda module: _patch_shared_memory(state, module),
        MP_PACKAGE: lambda module: _patch_start_method(state, module),
        DFLIVE_PACKAGE: lambda module: _patch_model_list(state, module),
    }
    for name, patch in _optional_patches(state.config).items():
        targets[name] = _patcher_for(state, patch)
    return targets


# ----------------------------------------------------------------------------------------- public

def install(config: Optional[DFLConfig] = None, propagate: bool = True) -> DFLConfig:
    """Patch DeepFaceLive in this process: now for modules already imported, at import for the rest.

    ``propagate`` also hands the settings to child processes (environment variable
    ``DFL_PERF_DFL_CONFIG`` plus a ``sitecustomize`` on ``PYTHONPATH``), so DFL's spawned workers
    are patched too. Safe without DFL (nothing to patch until its modules appear); calling it
    again replaces the previous installation. Returns the settings in force.
    """
    global _state
    config = config or DFLConfig()
    with _lock:
        uninstall()
        state = _Installed(config)
        if config.cuda_cache_maxsize is not None and not os.environ.get("CUDA_CACHE_MAXSIZE"):
            state.set_env("CUDA_CACHE_MAXSIZE", str(int(config.cuda_cache_maxsize)))
        if config.cache_dir:
            from dfl_perf.paths import CACHE_DIR_ENV

            state.set_env(CACHE_DIR_ENV, os.path.abspath(config.cache_dir))
        folder = config.startup_folder()
        if folder:
            from dfl_perf.adapters.deepfacelive.startup import recorder

            recorder(folder).mark("adapter")
        if config.malloc_reuse:
            from dfl_perf.memory.allocator import retain_freed_memory

            retain_freed_memory()
        if config.thread_pools:
            from dfl_perf.adapters.deepfacelive.threads import thread_environment

            for name, value in thread_environment(state.threads).items():
                if not os.environ.get(name):  # a value the user set wins
                    state.set_env(name, value)
        targets = _targets(state)
        state.hook = ImportHook(targets, lazy=[n for n in config.lazy_imports if n not in sys.modules])
        sys.meta_path.insert(0, state.hook)
        for name, patch in targets.items():
            module = sys.modules.get(name)
            if module is not None:
                patch(module)
        _govern_threads(state)
        if propagate:
            state.set_env(CONFIG_ENV, config.to_json())
            state.set_env("PYTHONPATH", _prepend_path(SITE_DIR, os.environ.get("PYTHONPATH")))
        _state = state
    return config


def uninstall() -> bool:
    """Undo ``install()``: original factory, methods and environment back; True if something was installed."""
    global _state
    with _lock:
        state, _state = _state, None
        if state is None:
            return False
        remove_hooks([state.hook])
        state.patcher.restore()
        if state.original_factory is not None:
            for module in list(sys.modules.values()):
                if module is not None and getattr(module, "__dict__", {}).get(FACTORY_NAME) is state.factory:
                    setattr(module, FACTORY_NAME, state.original_factory)
        state.restore_env()
        if state.memory is not None:
            state.memory.close()
        state.factory.dfl_perf_state.clear()  # type: ignore[attr-defined]
        meter = sys.modules.get("dfl_perf.adapters.deepfacelive.meter")
        if meter is not None:
            meter.forget_meters()
        threads = sys.modules.get("dfl_perf.adapters.deepfacelive.threads")
        if threads is not None:
            threads.restore_thread_pools()
        return True


def is_installed() -> bool:
    """True while an ``install()`` is in force in this process."""
    return _state is not None


def installed_config() -> Optional[DFLConfig]:
    """The settings of the current installation, or None."""
    state = _state
    return state.config if state is not None else None


def session_records() -> List[Any]:
    """What the patched factory built in this process (``SessionRecord`` list), newest last."""
    state = _state
    return list(state.factory.dfl_perf_state.records) if state is not None else []  # type: ignore[attr-defined]


def activate_from_env() -> bool:
    """Install from ``DFL_PERF_DFL_CONFIG`` when the launcher set it (used by the shipped sitecustomize)."""
    config = config_from_env()
    if config is None:
        return False
    install(config, propagate=False)
    return True


def _prepend_path(entry: str, current: Optional[str]) -> str:
    parts = [p for p in (current or "").split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry] + parts)

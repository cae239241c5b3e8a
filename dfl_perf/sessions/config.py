"""``SessionConfig``: a frozen, hashable, picklable description of how to build one onnxruntime session."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["SessionConfig", "ProviderEntry", "GPU_PROVIDERS", "COMPILING_PROVIDERS"]

#: One provider: (full name, sorted (option, value) string pairs).
ProviderEntry = Tuple[str, Tuple[Tuple[str, str], ...]]

#: Providers whose sessions keep their weights and activations in device memory.
GPU_PROVIDERS = frozenset({
    "CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
    "DmlExecutionProvider", "CoreMLExecutionProvider",
})

#: Providers that compile subgraphs: onnxruntime cannot save an optimized model that uses them.
COMPILING_PROVIDERS = frozenset({
    "TensorrtExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider", "OpenVINOExecutionProvider",
    "MIGraphXExecutionProvider", "NnapiExecutionProvider", "QNNExecutionProvider", "VitisAIExecutionProvider",
})

#: Providers whose sessions dfl_perf builds with onnxruntime's memory pattern off: DirectML needs it
#: off; on a CPU it keeps a second set of activations beside the arena's, for no speed
#: (benchmarks/RESULTS.md, "memory pattern off on a CPU").
MEM_PATTERN_OFF_PROVIDERS = frozenset({"CPUExecutionProvider", "DmlExecutionProvider"})

_LEVELS = ("disable", "basic", "extended", "all")
_LEVEL_ALIASES = {0: "disable", 1: "basic", 2: "extended", 99: "all", "disable_all": "disable",
                  "enable_basic": "basic", "enable_extended": "extended", "enable_all": "all"}
_MODES = ("sequential", "parallel")

ProvidersArg = Union[None, str, Sequence[Union[str, Tuple[str, Any]]]]


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _provider_name(name: str) -> str:
    from dfl_perf.devices import PROVIDER_ALIASES

    return PROVIDER_ALIASES.get(name.strip().lower(), name)


def _options_tuple(options: Union[None, Mapping[str, Any], Sequence[Tuple[str, Any]]]) -> Tuple[Tuple[str, str], ...]:
    items = options.items() if isinstance(options, Mapping) else (options or ())
    return tuple(sorted((str(k), _option_text(v)) for k, v in items))


def _normalise_providers(providers: ProvidersArg) -> Optional[Tuple[ProviderEntry, ...]]:
    """Providers as ``((name, ((opt, value), ...)), ...)``; a bare name gets dfl_perf's default options."""
    if providers is None:
        return None
    from dfl_perf.devices import default_provider_options

    if isinstance(providers, str):
        providers = [providers]
    entries: List[ProviderEntry] = []
    for item in providers:
        if isinstance(item, str):
            name = _provider_name(item)
            entries.append((name, _options_tuple(default_provider_options(name))))
        else:
            name, options = item
            entries.append((_provider_name(name), _options_tuple(options)))
    if not entries:
        raise ValueError("providers must name at least one execution provider")
    return tuple(entries)


def _normalise_level(level: Any) -> Optional[str]:
    if level is None:
        return None
    if not isinstance(level, (str, int)):  # an onnxruntime GraphOptimizationLevel enum member
        level = str(level).rsplit(".", 1)[-1]
    if isinstance(level, str):
        level = level.strip().lower()
        if level.startswith("ort_"):
            level = level[4:]
    level = _LEVEL_ALIASES.get(level, level)
    if level not in _LEVELS:
        raise ValueError("graph_optimization must be one of %s (or 0/1/2/99), got %r" % (", ".join(_LEVELS), level))
    return level


def _split_threads(budget: int, sessions: int, costs: Optional[Sequence[float]]) -> List[int]:
    """Intra-op threads per session: the budget shared out, weighted by cost; each at least 1."""
    if costs is None:
        return [max(1, budget // sessions)] * sessions
    if len(costs) != sessions:
        raise ValueError("costs has %d entries for %d sessions" % (len(costs), sessions))
    if any(c < 0 for c in costs) or sum(costs) <= 0:
        raise ValueError("costs must be non-negative and not all zero, got %r" % (list(costs),))
    total = float(sum(costs))
    # A stage that would need more than its share of one core to keep pace gets the extra threads:
    # throughput is set by the slowest stage, and idle light stages leave cores to the heavy one.
    return [min(budget, max(1, int(math.ceil(budget * c / total - 0.25)))) for c in costs]


@dataclass(frozen=True)
class SessionConfig:
    """How to build one session. Every field left at None/0 keeps onnxruntime's own default.

    - ``providers``: ``None`` means ``dfl_perf.devices.select_providers()`` at build time; otherwise
      provider names (which get dfl_perf's default options, e.g. cuDNN HEURISTIC search) or
      ``(name, options)`` pairs. Stored as tuples so the config is hashable. Provider options carry
      the GPU knobs: ``cudnn_conv_algo_search``, ``arena_extend_strategy``, ``gpu_mem_limit``,
      ``enable_cuda_graph``, ``trt_engine_cache_enable``/``trt_engine_cache_path``, ``trt_fp16_enable``
      (see ``with_provider_options``).
    - ``intra_op_threads``/``inter_op_threads`` (0 = onnxruntime default), ``intra_op_spinning``/
      ``inter_op_spinning`` (None = default, which spins), ``graph_optimization``
      ('disable'|'basic'|'extended'|'all'), ``execution_mode`` ('sequential'|'parallel'),
      ``enable_mem_pattern``, ``enable_cpu_mem_arena``, ``log_severity_level``, ``log_verbosity_level``.
    - ``free_dimensions``: symbolic dimension name -> value, applied as free-dimension overrides and
      used by ``warmup`` for the zero inputs.
    - ``config_entries``: extra ``add_session_config_entry`` pairs.
    - ``disk_cache``: keep onnxruntime's optimized graph on disk and load it next time.
    - ``lean_weights``: load a model file from its lean copy (weights in a separate file, made
      once; see ``dfl_perf.sessions.lean``) with weight pre-packing off: fewer copies of the weights
      in memory (about one of MatMul weights instead of two or three), some speed lost on
      MatMul-heavy models. Not with ``disk_cache``.
    - ``strict``: a provider that is unavailable or fails to initialise raises ``ProviderError``
      instead of falling back to the next provider with a warning.
    """

    providers: Optional[Tuple[ProviderEntry, ...]] = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    intra_op_spinning: Optional[bool] = None
    inter_op_spinning: Optional[bool] = None
    graph_optimization: Optional[str] = None
    execution_mode: Optional[str] = None
    enable_mem_pattern: Optional[bool] = None
    enable_cpu_mem_arena: Optional[bool] = None
    log_severity_level: Optional[int] = None
    log_verbosity_level: Optional[int] = None
    free_dimensions: Tuple[Tuple[str, int], ...] = ()
    config_entries: Tuple[Tuple[str, str], ...] = ()
    disk_cache: bool = False
    lean_weights: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "providers", _normalise_providers(self.providers))
        setattr_(self, "graph_optimization", _normalise_level(self.graph_optimization))
        if self.execution_mode is not None and self.execution_mode not in _MODES:
            raise ValueError("execution_mode must be one of %s, got %r" % (_MODES, self.execution_mode))
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError("%s must be an int >= 0 (0 = onnxruntime default), got %r" % (name, value))
        free = self.free_dimensions.items() if isinstance(self.free_dimensions, Mapping) else self.free_dimensions
        setattr_(self, "free_dimensions", tuple(sorted((str(k), int(v)) for k, v in free)))
        setattr_(self, "config_entries", _options_tuple(self.config_entries))
        if self.lean_weights and self.disk_cache:
            raise ValueError("lean_weights and disk_cache cannot be combined: the disk cache stores the optimized "
                             "graph with its weights inside, which is what lean_weights avoids")

    # ------------------------------------------------------------------------------ constructors

    @classmethod
    def dfl_default(cls, provider: str = "CPUExecutionProvider", device_id: int = 0) -> SessionConfig:
        """Exactly what DeepFaceLive's ``InferenceSession_with_device`` builds (the benchmark baseline).

        One provider and no fallback, ``device_id`` for CUDA and DirectML, log severity 4 and
        verbosity -1, memory pattern off for DirectML, every other setting onnxruntime's default.
        """
        name = _provider_name(provider)
        options = {"device_id": str(device_id)} if name in ("CUDAExecutionProvider", "DmlExecutionProvider") else {}
        return cls(providers=((name, _options_tuple(options)),), log_severity_level=4, log_verbosity_level=-1,
                   enable_mem_pattern=False if name == "DmlExecutionProvider" else None, strict=True)

    @classmethod
    def tuned(cls, threads: Optional[int] = None, providers: ProvidersArg = None) -> SessionConfig:
        """Good settings for one session: ``threads`` intra-op threads (default ``cpu_budget()``),
        no spinning (idle threads then leave the cores to decoding, merging and other sessions),
        full graph optimisation, providers from ``select_providers`` unless given. When the first
        of the given ``providers`` is in ``MEM_PATTERN_OFF_PROVIDERS`` (CPU, DirectML), onnxruntime's
        memory pattern is off too."""
        from dfl_perf.devices import cpu_budget

        config = cls(providers=providers, intra_op_threads=threads or cpu_budget(), inter_op_threads=1,
                     intra_op_spinning=False, inter_op_spinning=False, graph_optimization="all",
                     execution_mode="sequential", log_severity_level=3)
        if config.providers is not None and config.providers[0][0] in MEM_PATTERN_OFF_PROVIDERS:
            config = config.replace(enable_mem_pattern=False)
        return config

    @classmethod
    def for_pipeline(cls, sessions: int, costs: Optional[Sequence[float]] = None,
                     providers: ProvidersArg = None) -> List[SessionConfig]:
        """Configs for ``sessions`` sessions busy at the same time (a detector, a marker, a swapper...).

        Returns one config per session, in the order of ``costs``. Spinning is off (a spinning idle
        session starves the busy ones). The ``cpu_budget()`` cores are shared out: without costs,
        ``budget // sessions`` threads each (at least 1); with ``costs`` (relative time per frame,
        e.g. measured milliseconds) a session gets ``ceil(budget * cost / sum(costs) - 0.25)``
        threads, at least 1 and at most the budget, so a heavy swap model gets the extra cores and
        light models one each.
        """
        from dfl_perf.devices import cpu_budget

        if not isinstance(sessions, int) or sessions < 1:
            raise ValueError("sessions must be an int >= 1, got %r" % (sessions,))
        threads = _split_threads(cpu_budget(), sessions, costs)
        base = cls.tuned(threads=1, providers=providers)
        return [base.replace(intra_op_threads=n) for n in threads]

    # --------------------------------------------------------------------------------- helpers

    def replace(self, **changes: Any) -> SessionConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def resolved_providers(self) -> Tuple[ProviderEntry, ...]:
        """The providers this config builds with (``select_providers()`` when ``providers`` is None)."""
        if self.providers is not None:
            return self.providers
        from dfl_perf.devices import available_providers, select_providers

        # ``available`` given: skips the install diagnostics (70 ms of package-metadata scans on the
        # first call); ``dfl_perf.devices.warn_install_problems()`` or ``dfl-perf doctor`` run them.
        chosen = select_providers(available=available_providers())
        return tuple((name, _options_tuple(opts)) for name, opts in chosen)

    def with_provider_options(self, provider: str, **options: Any) -> SessionConfig:
        """A copy with ``options`` merged into ``provider``'s options (booleans become '1'/'0').

        Example: ``config.with_provider_options('cuda', gpu_mem_limit=2 << 30, enable_cuda_graph=True)``.
        Raises ValueError when the config does not use ``provider``.
        """
        name = _provider_name(provider)
        entries = []
        found = False
        for entry_name, entry_opts in self.resolved_providers():
            if entry_name == name:
                merged = dict(entry_opts)
                merged.update((k, _option_text(v)) for k, v in options.items())
                entry_opts = _options_tuple(merged)
                found = True
            entries.append((entry_name, entry_opts))
        if not found:
            raise ValueError("this config does not use %s (providers: %s)"
                             % (name, ", ".join(n for n, _ in self.resolved_providers())))
        return self.replace(providers=tuple(entries))

    def provider_list(self) -> List[Tuple[str, Dict[str, str]]]:
        """Providers as onnxruntime wants them: ``[(name, {option: value}), ...]``."""
        return [(name, dict(opts)) for name, opts in self.resolved_providers()]

    @property
    def memory_kind(self) -> str:
        """'device' when the first provider keeps tensors on a GPU, else 'host'."""
        return "device" if self.resolved_providers()[0][0] in GPU_PROVIDERS else "host"

    def to_session_options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` of this config (its providers: ``provider_list()``)."""
        from dfl_perf.ortinfo import ort_module

        ort = ort_module()
        so = ort.SessionOptions()
        if self.intra_op_threads:
            so.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads:
            so.inter_op_num_threads = self.inter_op_threads
        if self.intra_op_spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.intra_op_spinning else "0")
        if self.inter_op_spinning is not None:
            so.add_session_config_entry("session.inter_op.allow_spinning", "1" if self.inter_op_spinning else "0")
        if self.graph_optimization is not None:
            so.graph_optimization_level = _ort_level(ort, self.graph_optimization)
        if self.execution_mode is not None:
            so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if self.execution_mode == "parallel"
                                 else ort.ExecutionMode.ORT_SEQUENTIAL)
        if self.enable_mem_pattern is not None:
            so.enable_mem_pattern = self.enable_mem_pattern
        if self.enable_cpu_mem_arena is not None:
            so.enable_cpu_mem_arena = self.enable_cpu_mem_arena
        if self.log_severity_level is not None:
            so.log_severity_level = self.log_severity_level
        if self.log_verbosity_level is not None:
            so.log_verbosity_level = self.log_verbosity_level
        for name, value in self.free_dimensions:
            so.add_free_dimension_override_by_name(name, value)
        if self.lean_weights:
            so.add_session_config_entry("session.disable_prepacking", "1")
        for key, value in self.config_entries:
            so.add_session_config_entry(key, value)
        return so


def _ort_level(ort, level: str):
    levels = ort.GraphOptimizationLevel
    return {"disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED, "all": levels.ORT_ENABLE_ALL}[level]

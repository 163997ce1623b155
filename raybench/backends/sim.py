"""The built-in simulator as a backend: ``python -m raybench sim``, a GPU and a backend profile.

It stands in for a GPU server: by default it reserves no GPU from Ray (``placement`` can ask
for some, to exercise placement), starts in a second, and serves the same OpenAI API plus
its ground-truth log (``/sim/ground_truth``), which the runner saves beside each cell.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from raybench.backends.base import BackendKind, Endpoints, ProcessBackend, check_positive
from raybench.errors import ConfigError
from raybench.sim.features import EngineFeatures

TIMINGS = ("zero", "fixed", "engine")


@dataclass(frozen=True, kw_only=True)
class SimBackend(ProcessBackend):
    """The built-in simulator, started by raybench; it stands in for a GPU server."""

    kind: ClassVar[BackendKind] = BackendKind.SIM
    endpoints: ClassVar[Endpoints] = Endpoints(cache_reset="/reset_prefix_cache", version=("/version",))
    reserved_flags: ClassVar[dict[str, str]] = {"--host": "the node's address", "--port": "a free port"}

    name: str = "sim"
    timing: str = "engine"
    gpu: str = "H200"
    num_gpus: int = 8  # GPUs the cost model simulates (not reserved from Ray: see placement)
    profile: str = "generic"
    ttft_ms: float = 200.0
    itl_ms: float = 20.0
    tokens_per_chunk: int = 1
    # engine timing: the scheduling features of the server it stands in for (raybench.predict
    # maps launch settings onto them; None: the profile engine's defaults) and a profiles file
    engine_features: EngineFeatures | None = None
    profiles: str | None = None
    ready_timeout_s: float = 60.0
    stop_grace_s: float = 10.0

    def __post_init__(self) -> None:
        from raybench.sim import costmodel, features  # here: the cost model's tables, not the server

        super().__post_init__()
        if self.timing not in TIMINGS:
            raise ConfigError.unknown("sim timing", str(self.timing), TIMINGS)
        # refused when the experiment is built (plan, before Ray starts), not when the server starts
        for field_name, value, known, what in (("gpu", self.gpu, costmodel.GPUS, "GPU profiles"),
                                               ("profile", self.profile, features.ENGINES, "engine profiles")):
            if value not in known:
                raise ConfigError(f"SimBackend {self.name!r}: {field_name}={value!r} is not allowed; "
                                  f"the simulator's {what}: {', '.join(sorted(known))}")
        check_positive("tokens_per_chunk", self.tokens_per_chunk)
        check_positive("num_gpus", self.num_gpus)
        for name in ("ttft_ms", "itl_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 3.6e6:
                raise ConfigError.invalid(name, value, "a number of milliseconds in 0..3600000")

    def timing_identity(self) -> dict[str, Any]:
        """zero, fixed and engine timings give numbers of different meaning: cells of one must not
        pass for cells of another in one run dir (fixed: its delays; engine: its cost model)."""
        identity: dict[str, Any] = {"timing": self.timing, "tokens_per_chunk": self.tokens_per_chunk}
        if self.timing == "fixed":
            identity.update(ttft_ms=self.ttft_ms, itl_ms=self.itl_ms)
        elif self.timing == "engine":
            identity.update(gpu=self.gpu, num_gpus=self.num_gpus, profile=self.profile, profiles=self.profiles)
        return identity

    def may_cache_prefixes(self, version: str | None) -> bool:
        """Only engine timing holds requests in an engine core, with the prefix cache of its features."""
        from raybench.sim.features import PrefixCache, defaults

        if self.timing != "engine":
            return False
        features = self.engine_features or defaults(self.profile)
        return features.prefix_cache is not PrefixCache.NONE

    def check_model(self, model: str) -> None:
        """The simulator can serve ``model`` with these settings (engine timing needs a profiled model that fits)."""
        from raybench.sim.config import SimConfig, SimConfigError

        # a --kv-capacity-tokens in extra_args overrides the weights-fit check the simulator makes
        capacity = 1 if any(a.split("=", 1)[0] == "--kv-capacity-tokens" for a in self.extra_args) else None
        try:
            SimConfig(model=model, timing=self.timing, gpu=self.gpu, num_gpus=self.num_gpus,
                      backend_profile=self.profile, tokens_per_chunk=self.tokens_per_chunk, kv_capacity_tokens=capacity)
        except SimConfigError as err:
            raise ConfigError(f"SimBackend {self.name!r}: {err}") from None

    def server_argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        return self._argv(model=model, host=host, port=port, python=python) + list(self.extra_args)

    def argv(self, *, model: str, port: int, ready_file: str | None = None, host: str = "127.0.0.1") -> list[str]:
        """The command line on this machine (tests and benchmarks start it without Ray)."""
        argv = self._argv(model=model, host=host, port=port, python=sys.executable)
        if ready_file:
            argv += ["--ready-file", ready_file]
        return argv + list(self.extra_args)

    def _argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        argv = [python, "-m", "raybench", "sim", "--host", host, "--port", str(port)]
        argv += ["--model", model, "--timing", self.timing, "--gpu", self.gpu]
        argv += ["--num-gpus", str(self.num_gpus), "--backend-profile", self.profile]
        argv += ["--ttft-ms", str(self.ttft_ms), "--itl-ms", str(self.itl_ms)]
        argv += ["--tokens-per-chunk", str(self.tokens_per_chunk)]
        if self.profiles:
            argv += ["--profiles", self.profiles]
        return argv + feature_flags(self.engine_features)


def feature_flags(features: EngineFeatures | None) -> list[str]:
    """``raybench sim`` options that give the simulated engine these features."""
    if features is None:
        return []
    f = features
    argv = ["--policy", f.policy.value, "--chunked-prefill" if f.chunked_prefill else "--no-chunked-prefill",
            "--max-num-batched-tokens", str(f.prefill_tokens_per_step), "--max-num-seqs", str(f.max_running),
            "--dp-attention", str(f.dp_attention), "--prefix-cache", f.prefix_cache.value,
            "--preemption", f.preemption.value, "--memory-fraction", str(f.memory_fraction),
            "--block-size", str(f.block_tokens)]
    if f.max_model_len is not None:
        argv += ["--max-model-len", str(f.max_model_len)]
    argv.append("--cuda-graphs" if f.cuda_graphs else "--no-cuda-graphs")
    if f.graph_max_context is not None:
        argv += ["--graph-max-context", str(f.graph_max_context)]
    argv.append("--async-output" if f.async_output else "--no-async-output")
    argv.append("--profiled-kv-pool" if f.profiled_kv_pool else "--no-profiled-kv-pool")
    argv.append("--memory-of-free" if f.memory_of_free else "--memory-of-total")
    argv.append("--oversized-prompt-alone" if f.oversized_prompt_alone else "--oversized-prompt-refused")
    return argv

"""Configuration of the simulator: one frozen, validated dataclass.

The simulator ships on its own, so it has its own error type (``SimConfigError``, a
``ValueError``) instead of raybench's tree; every message names the field, the bad value and
what is allowed, so the CLI can point at the option to fix.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Literal, get_args

Timing = Literal["zero", "fixed", "engine"]
TIMINGS: tuple[str, ...] = get_args(Timing)


class FaultKind(str, enum.Enum):
    """What an injected fault does to a request it hits."""

    HTTP_500 = "http_500"  # answer 500 with an OpenAI-style JSON error body
    HTTP_429 = "http_429"  # answer 429 (rate limited) with an OpenAI-style JSON error body
    DROP = "drop"  # close the connection after K events, without the terminating chunk
    STALL = "stall"  # stop sending after K events but keep the connection open
    MALFORMED = "malformed"  # send a `data: {not json` event after K events, then go on
    NOT_OPENAI = "not_openai"  # answer 200 with an HTML page (text/html)
    # answer in full with keep-alive advertised, then close the connection shortly after the
    # streamed response ends, dropping a request the client already sent on it unanswered (as
    # llama.cpp's llama-server does)
    CLOSE_AFTER = "close_after"


#: kinds for which ``after_chunks`` has a meaning (the others act before the first byte)
MID_STREAM_FAULTS = frozenset({FaultKind.DROP, FaultKind.STALL, FaultKind.MALFORMED})


class SimConfigError(ValueError):
    """A simulator setting is impossible; ``field`` is the SimConfig field at fault."""

    def __init__(self, field_name: str, value: object, allowed: str) -> None:
        super().__init__(f"{field_name}={value!r} is not allowed: {allowed}")
        self.field = field_name
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True, kw_only=True)
class FaultSpec:
    """Inject ``kind`` into every ``every``-th generation request (counted from 1 per reset).

    ``after_chunks`` is how many SSE events are written before a mid-stream fault acts
    (drop, stall, malformed); it must be 0 for the kinds that act before the first byte.
    """

    kind: FaultKind
    every: int = 1
    after_chunks: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", FaultKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise SimConfigError("fault.kind", self.kind, f"one of {allowed}") from None
        if not _is_int(self.every) or self.every < 1:
            raise SimConfigError("fault.every", self.every, "an integer >= 1")
        if not _is_int(self.after_chunks) or self.after_chunks < 0:
            raise SimConfigError("fault.after_chunks", self.after_chunks, "an integer >= 0")
        if self.after_chunks and self.kind not in MID_STREAM_FAULTS:
            raise SimConfigError(
                "fault.after_chunks",
                self.after_chunks,
                f"0 for {self.kind.value} (only drop, stall and malformed act mid-stream)",
            )

    def hits(self, arrival_index: int) -> bool:
        """True when the request with this 1-based arrival index gets this fault."""
        return arrival_index % self.every == 0


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything the simulated server and offline engine need.

    Timing modes: ``zero`` streams as fast as the host allows (to measure clients), ``fixed``
    gives every request ``ttft_ms`` to its first chunk and ``itl_ms`` per token after it, with no
    capacity limit, and ``engine`` runs the continuous-batching core with roofline step times.
    ``None`` for max_num_seqs / max_num_batched_tokens means the backend profile's default;
    ``None`` for kv_capacity_tokens means GPU memory minus weights and reserve (costmodel.py).
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = let the OS pick a free port
    model: str = "deepseek-ai/DeepSeek-R1"
    timing: Timing = "zero"
    ttft_ms: float = 200.0
    itl_ms: float = 20.0
    tokens_per_chunk: int = 1  # k > 1 models MTP / speculative decoding: k tokens per step
    gpu: str = "H200"
    num_gpus: int = 8
    backend_profile: str = "vllm"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_capacity_tokens: int | None = None
    features: object | None = None  # EngineFeatures; None: the engine's defaults (features.defaults)
    profiles: str | None = None  # a profiles JSON file (raybench calibrate --out); None: the shipped ones
    seed: int = 0
    faults: tuple[FaultSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # imported here: costmodel imports this module for the error type
        from raybench.sim import costmodel
        from raybench.sim.features import ENGINES, EngineFeatures

        _check_host(self.host)
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise SimConfigError("port", self.port, "an integer in 0..65535 (0 = pick a free port)")
        if not isinstance(self.model, str) or not self.model.strip():
            raise SimConfigError("model", self.model, "a non-empty model name")
        if self.timing not in TIMINGS:
            raise SimConfigError("timing", self.timing, f"one of {', '.join(TIMINGS)}")
        for name in ("ttft_ms", "itl_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 3.6e6:
                raise SimConfigError(name, value, "a number of milliseconds in 0..3600000")
        if not _is_int(self.tokens_per_chunk) or not 1 <= self.tokens_per_chunk <= 64:
            raise SimConfigError("tokens_per_chunk", self.tokens_per_chunk, "an integer in 1..64")
        if self.gpu not in costmodel.GPUS:
            raise SimConfigError("gpu", self.gpu, f"one of {', '.join(costmodel.GPUS)}")
        if not _is_int(self.num_gpus) or not 1 <= self.num_gpus <= 1024:
            raise SimConfigError("num_gpus", self.num_gpus, "an integer in 1..1024")
        if self.backend_profile not in ENGINES:
            raise SimConfigError("backend_profile", self.backend_profile, f"one of {', '.join(ENGINES)}")
        if self.features is not None and not isinstance(self.features, EngineFeatures):
            raise SimConfigError("features", self.features, "None or an EngineFeatures")
        for name in ("max_num_seqs", "max_num_batched_tokens", "kv_capacity_tokens"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise SimConfigError(name, value, "None (profile default) or an integer >= 1")
        if not _is_int(self.seed):
            raise SimConfigError("seed", self.seed, "an integer")
        faults = tuple(self.faults)
        if not all(isinstance(f, FaultSpec) for f in faults):
            raise SimConfigError("faults", self.faults, "a tuple of FaultSpec")
        object.__setattr__(self, "faults", faults)
        if self.timing == "engine":
            costmodel.resolve(self)  # raises SimConfigError if the model does not fit, etc.


    def engine_features(self):
        """The launch features: the given ones, or the engine's defaults."""
        from raybench.sim.features import defaults

        return self.features if self.features is not None else defaults(self.backend_profile)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_host(host: object) -> None:
    if not isinstance(host, str) or not host:
        raise SimConfigError("host", host, "an IP address or host name")
    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part.isalnum() or part.replace("-", "").isalnum() for part in host.split(".")):
            raise SimConfigError("host", host, "an IP address or host name") from None

"""Experiments as code: what to benchmark, expanded into a plan of cells.

An experiment file is Python that defines ``experiment = Experiment(...)``. Everything here is
a frozen dataclass validated when built, so a bad file fails before any server starts.
A cell is one point of the matrix (backend x workload); its id is derived from its settings,
so the same file always gives the same ids.
"""

from __future__ import annotations

import enum
import math
import runpy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raybench.backends import (  # noqa: F401  (re-exported: experiment files import backends from here)
    Backend,
    Container,
    ExternalBackend,
    Placement,
    Platform,
    SGLangBackend,
    SimBackend,
    TRTLLMBackend,
    VLLMBackend,
)
from raybench.errors import ConfigError


class Mode(str, enum.Enum):
    ONLINE = "online"  # a server under closed-loop concurrency or an arrival rate
    OFFLINE = "offline"  # a batch of B prompts at once


class OfflineMethod(str, enum.Enum):
    ENGINE = "engine"  # one batched generate on the backend's in-process engine
    BURST = "burst"  # B requests sent at once to the server


def _positive_ints(name: str, values: tuple[int, ...]) -> tuple[int, ...]:
    values = tuple(values)
    if not values:
        raise ConfigError.invalid(name, values, "a non-empty list of integers >= 1")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError.invalid(name, v, "integers >= 1")
    return values


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError.invalid(name, value, "an integer >= 1")


@dataclass(frozen=True, kw_only=True)
class Online:
    """Online sweep: one cell per concurrency."""

    concurrency: tuple[int, ...]
    input_len: int
    output_len: int
    num_prompts: int
    dataset: str = "random"
    range_ratio: float = 0.0
    request_rate: float = math.inf
    burstiness: float = 1.0
    # shared-prefix dataset only
    num_groups: int = 10
    prompts_per_group: int = 50
    prefix_len: int = 2000

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", _positive_ints("concurrency", self.concurrency))
        for name in ("input_len", "output_len", "num_prompts"):
            _positive_int(name, getattr(self, name))
        if self.dataset not in ("random", "prefix"):
            raise ConfigError.unknown("dataset", self.dataset, ("random", "prefix"))
        if not 0 <= self.range_ratio < 1:
            raise ConfigError.invalid("range_ratio", self.range_ratio, "0 <= range_ratio < 1")
        if not self.request_rate > 0:
            raise ConfigError.invalid("request_rate", self.request_rate, "> 0 (inf = all at once)")
        if not self.burstiness > 0:
            raise ConfigError.invalid("burstiness", self.burstiness, "> 0")


@dataclass(frozen=True, kw_only=True)
class Offline:
    """Offline sweep: one cell per batch size."""

    batch_sizes: tuple[int, ...]
    input_len: int
    output_len: int
    method: OfflineMethod = OfflineMethod.ENGINE

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", _positive_ints("batch_sizes", self.batch_sizes))
        _positive_int("input_len", self.input_len)
        _positive_int("output_len", self.output_len)
        object.__setattr__(self, "method", OfflineMethod(self.method))


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One point of the matrix. Fields that do not apply to its mode are None."""

    id: str
    backend: str
    mode: Mode
    input_len: int
    output_len: int
    dataset: str = "random"
    concurrency: int | None = None
    num_prompts: int | None = None
    batch_size: int | None = None
    offline_method: OfflineMethod | None = None
    range_ratio: float = 0.0
    request_rate: float = math.inf
    burstiness: float = 1.0
    prefix_len: int = 0
    num_groups: int | None = None
    prompts_per_group: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode.value
        d["offline_method"] = self.offline_method.value if self.offline_method else None
        d["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        return d


@dataclass(frozen=True, kw_only=True)
class Experiment:
    name: str
    model: str
    backends: tuple[Backend, ...]
    online: tuple[Online, ...] = ()
    offline: tuple[Offline, ...] = ()
    seed: int = 0
    warmup_requests: int = 1
    compat: str = "raybench"
    goodput_slos_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("backends", "online", "offline"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.backends:
            raise ConfigError.invalid("backends", (), "at least one backend")
        if not (self.online or self.offline):
            raise ConfigError.invalid("online/offline", (), "at least one sweep")
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ConfigError.invalid("backends", names, "distinct backend names")
        if self.compat not in ("raybench", "sglang", "vllm"):
            raise ConfigError.unknown("compat", self.compat, ("raybench", "sglang", "vllm"))

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    def cells(self) -> list[Cell]:
        cells: list[Cell] = []
        for b in self.backends:
            for s in self.online:
                prefix = s.dataset == "prefix"
                for c in s.concurrency:
                    tag = f"p{s.prefix_len}" if prefix else ""
                    rate = "" if math.isinf(s.request_rate) else f"-r{s.request_rate:g}"
                    cells.append(
                        Cell(
                            id=f"{b.name}-online-c{c}-i{s.input_len}{tag}-o{s.output_len}{rate}",
                            backend=b.name, mode=Mode.ONLINE, concurrency=c,
                            num_prompts=s.num_groups * s.prompts_per_group if prefix else s.num_prompts,
                            input_len=s.input_len, output_len=s.output_len, dataset=s.dataset,
                            range_ratio=s.range_ratio, request_rate=s.request_rate,
                            burstiness=s.burstiness, prefix_len=s.prefix_len if prefix else 0,
                            num_groups=s.num_groups if prefix else None,
                            prompts_per_group=s.prompts_per_group if prefix else None,
                        )
                    )
            for o in self.offline:
                for bs in o.batch_sizes:
                    cells.append(
                        Cell(
                            id=f"{b.name}-offline-{o.method.value}-b{bs}-i{o.input_len}-o{o.output_len}",
                            backend=b.name, mode=Mode.OFFLINE, batch_size=bs, num_prompts=bs,
                            input_len=o.input_len, output_len=o.output_len, offline_method=o.method,
                        )
                    )
        ids = [c.id for c in cells]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"two cells share the id {dup!r}: remove the repeated sweep entry")
        return cells


def load_experiment(path: str | Path) -> Experiment:
    """Run an experiment file and return its ``experiment``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist")
    try:
        namespace = runpy.run_path(str(path), run_name="__raybench_experiment__")
    except SyntaxError as err:
        raise ConfigError(f"{path}:{err.lineno}: syntax error: {err.msg}") from err
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from err
    experiment = namespace.get("experiment")
    if not isinstance(experiment, Experiment):
        raise ConfigError(f"{path} must define `experiment = Experiment(...)`")
    return experiment

"""Experiments as code: what to benchmark, expanded into a plan of cells.

An experiment file is Python that defines ``experiment = Experiment(...)``. Everything here is
a frozen dataclass validated when built, so a bad file fails before any server starts.
A cell is one point of the matrix (backend x workload); its id is derived from its settings,
so the same file always gives the same ids.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import runpy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
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
from raybench.search import SloSearch
from raybench.workloads.base import MAX_TOKENS, require_vocab


# workloads an online sweep can send; file datasets need a dataset_path
RAMPS = ("linear", "exponential")
DATASETS = ("random", "prefix", "sharegpt", "custom", "trace", "multiturn")
FILE_DATASETS = ("sharegpt", "custom", "trace")


class Mode(str, enum.Enum):
    ONLINE = "online"  # a server under closed-loop concurrency or an arrival rate
    OFFLINE = "offline"  # a batch of B prompts at once


class OfflineMethod(str, enum.Enum):
    ENGINE = "engine"  # one batched generate on the backend's in-process engine
    BURST = "burst"  # B requests sent at once to the server


def _positive_ints(name: str, values: Any) -> tuple[int, ...]:
    """A sweep axis: one accepted shape, a list or tuple (a bare ``4`` is refused, not guessed at)."""
    example = f"{name}=[{values}]" if _is_int(values) else f"{name}=[1, 4, 16]"
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError.invalid(name, values, f"a non-empty list/tuple of ints >= 1, e.g. {example}")
    for v in values:
        if not _is_int(v) or v < 1:
            raise ConfigError.invalid(name, v, f"each entry an int >= 1, e.g. {example}")
    return tuple(values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value: Any, allowed: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ConfigError.invalid(name, value, allowed)
    return value


def _positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError.invalid(name, value, "an integer >= 1")


# A cell keeps every request's row and every chunk's timestamp until it is written, and builds its
# prompts and send times up front: beyond these a cell would exhaust memory long before it ended.
MAX_REQUESTS_PER_CELL = 10_000_000


def _at_most_requests(name: str, value: int, requests: int) -> None:
    if requests > MAX_REQUESTS_PER_CELL:
        counted = "" if requests == value else f" (a cell of {requests:,} requests)"
        raise ConfigError.invalid(name, value, f"at most {MAX_REQUESTS_PER_CELL:,} requests a cell{counted}: a cell "
                                  "keeps every request and chunk in memory; for more, run repeats (repeats=N)")


def _at_most_tokens(name: str, value: int) -> None:
    if value > MAX_TOKENS:
        raise ConfigError.invalid(name, value, f"at most {MAX_TOKENS:,} tokens")


def _names(name: str, values: Any) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ConfigError.invalid(name, values, "a tuple of backend names, e.g. ('vllm-h200',)")
    return tuple(values)


_HW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# Ray names an NVIDIA GPU by its model ("H200", "H100", "A100"); AMD Instinct GPUs by a longer
# name (ray/_private/accelerators/amd_gpu.py). Names not listed here are taken as Ray's own.
RAY_ACCELERATOR_TYPES: Mapping[str, str] = MappingProxyType({
    "MI300X": "AMD-Instinct-MI300X-OAM",
    "MI300A": "AMD-Instinct-MI300A",
    "MI308X": "AMD-Instinct-MI308X-OAM",
    "MI325X": "AMD-Instinct-MI325X-OAM",
    "MI350X": "AMD-Instinct-MI350X-OAM",
    "MI355X": "AMD-Instinct-MI355X-OAM",
    "MI250X": "AMD-Instinct-MI250X",
})
# Ray gives each node one unit of "accelerator_type:<type>"; asking for a sliver of it pins an
# actor to such a node without using it up (Ray's own accelerator_type option asks for 0.001)
ACCELERATOR_TYPE_SHARE = 0.001


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """A kind of accelerator node: its name, how many GPUs a server takes, and how Ray finds it.

    ``Hardware(name="H200", count=8)`` places the server on a node whose GPUs Ray itself detects
    as H200 (the ``accelerator_type:H200`` resource every Ray node with H200s has), so a stock
    Ray cluster needs no extra setup. ``resource="h200-pool"`` places by a custom resource
    instead, asking for ``{"h200-pool": count}`` (start such nodes with ``ray start
    --resources '{"h200-pool": 8}'``). The name goes into cell ids and the plan.
    """

    name: str
    count: int = 8  # GPUs per server: the simulator stand-in models this many
    resource: str | None = None  # a custom Ray resource to place by; None: Ray's accelerator type
    accelerator_type: str | None = None  # Ray's name for the GPU; None: from the name (see RAY_ACCELERATOR_TYPES)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _HW_NAME.match(self.name):
            raise ConfigError.invalid("hardware.name", self.name, "letters, digits, '_' or '-', e.g. H200")
        _positive_int("hardware.count", self.count)
        if self.resource is not None and (not isinstance(self.resource, str) or not self.resource):
            raise ConfigError.invalid("hardware.resource", self.resource, "a Ray resource name, e.g. h200-pool, or None")
        if self.accelerator_type is None:
            object.__setattr__(self, "accelerator_type", RAY_ACCELERATOR_TYPES.get(self.name, self.name))
        elif not isinstance(self.accelerator_type, str) or not self.accelerator_type:
            raise ConfigError.invalid("hardware.accelerator_type", self.accelerator_type,
                                      "the type `ray status` lists, e.g. H200 or AMD-Instinct-MI300X-OAM")

    @property
    def ray_resources(self) -> dict[str, float]:
        """What a server on this hardware asks Ray for, besides its GPUs."""
        if self.resource is not None:
            return {self.resource: self.count}
        return {f"accelerator_type:{self.accelerator_type}": ACCELERATOR_TYPE_SHARE}


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
    # file datasets (sharegpt, custom, trace): the file; num_prompts is then at most this many of
    # its records. sharegpt/custom/trace take output lengths from the file unless force_output_len
    # (custom records without output_tokens get output_len)
    dataset_path: str | None = None
    force_output_len: bool = False
    time_scale: float = 1.0  # trace: gaps times this (2 = half the trace's pace)
    # multiturn: num_prompts sessions of num_turns turns; concurrency counts sessions
    num_turns: int = 4
    think_time_s: float = 0.0
    # ramp-up (linear | exponential), as vLLM's --ramp-up-strategy: with a finite request_rate the
    # rate ramps from ramp_start to request_rate over the cell's requests; without one the
    # concurrency cap ramps from ramp_start to each concurrency over ramp_up_s seconds
    ramp_up: str | None = None
    ramp_start: float | None = None
    ramp_up_s: float = 0.0
    # backend names this sweep runs on; empty: every backend
    only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", _positive_ints("concurrency", self.concurrency))
        object.__setattr__(self, "only", _names("only", self.only))
        for name in ("input_len", "output_len", "num_prompts", "num_groups", "prompts_per_group", "prefix_len",
                     "num_turns"):
            _positive_int(name, getattr(self, name))
        for name in ("input_len", "output_len", "prefix_len"):
            _at_most_tokens(name, getattr(self, name))
        count = {"prefix": "prompts_per_group", "multiturn": "num_prompts"}.get(self.dataset, "num_prompts")
        _at_most_requests(count, getattr(self, count), _num_requests(self))
        if self.dataset not in DATASETS:
            raise ConfigError.unknown("dataset", str(self.dataset), DATASETS)
        if not 0 <= _number("range_ratio", self.range_ratio, "a number with 0 <= range_ratio < 1") < 1:
            raise ConfigError.invalid("range_ratio", self.range_ratio, "a number with 0 <= range_ratio < 1")
        if not _number("request_rate", self.request_rate, "a number > 0 (math.inf = all at once)") > 0:
            raise ConfigError.invalid("request_rate", self.request_rate, "a number > 0 (math.inf = all at once)")
        # inf would pass here and fail only once the cell ran (and again on every resume)
        burstiness_allowed = "a finite number > 0 (1 = Poisson, < 1 burstier)"
        if not (math.isfinite(_number("burstiness", self.burstiness, burstiness_allowed)) and self.burstiness > 0):
            raise ConfigError.invalid("burstiness", self.burstiness, burstiness_allowed)
        if self.dataset == "prefix" and self.prefix_len >= self.input_len:
            raise ConfigError.invalid("prefix_len", self.prefix_len, f"below input_len ({self.input_len}): "
                                      "input_len counts the shared prefix plus the question")
        if (self.dataset in FILE_DATASETS) != (self.dataset_path is not None):
            raise ConfigError.invalid("dataset_path", self.dataset_path,
                                      f"a file for dataset {' or '.join(FILE_DATASETS)}, None for the others")
        if self.dataset_path is not None:
            object.__setattr__(self, "dataset_path", str(self.dataset_path))
        if not (isinstance(self.time_scale, (int, float)) and math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError.invalid("time_scale", self.time_scale, "a finite number > 0 (1 = the trace's own pace)")
        if not (isinstance(self.think_time_s, (int, float)) and math.isfinite(self.think_time_s) and self.think_time_s >= 0):
            raise ConfigError.invalid("think_time_s", self.think_time_s, "a finite number of seconds >= 0")
        self._check_ramp()

    def _check_ramp(self) -> None:
        if self.ramp_up is None:
            if self.ramp_start is not None:
                raise ConfigError.invalid("ramp_start", self.ramp_start, "None without ramp_up")
            return
        if self.ramp_up not in RAMPS:
            raise ConfigError.unknown("ramp_up", str(self.ramp_up), RAMPS)
        start = self.ramp_start
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not (math.isfinite(start) and start > 0):
            raise ConfigError.invalid("ramp_start", start, "the rate (or concurrency) the ramp starts from, > 0")
        if math.isinf(self.request_rate):
            if start != int(start) or start > min(self.concurrency):
                raise ConfigError.invalid("ramp_start", start, f"a concurrency from 1 to {min(self.concurrency)} "
                                          "(without a request_rate the concurrency cap ramps)")
            if not (isinstance(self.ramp_up_s, (int, float)) and math.isfinite(self.ramp_up_s) and self.ramp_up_s > 0):
                raise ConfigError.invalid("ramp_up_s", self.ramp_up_s, "the seconds the concurrency ramp takes, > 0")
        elif start > self.request_rate:
            raise ConfigError.invalid("ramp_start", start, f"a rate up to request_rate ({self.request_rate:g})")


@dataclass(frozen=True, kw_only=True)
class Offline:
    """Offline sweep: one cell per batch size."""

    batch_sizes: tuple[int, ...]
    input_len: int
    output_len: int
    method: OfflineMethod = OfflineMethod.ENGINE
    # backend names this sweep runs on; empty: every backend
    only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", _positive_ints("batch_sizes", self.batch_sizes))
        object.__setattr__(self, "only", _names("only", self.only))
        for bs in self.batch_sizes:
            _at_most_requests("batch_sizes", bs, bs)
        for name in ("input_len", "output_len"):
            _positive_int(name, getattr(self, name))
            _at_most_tokens(name, getattr(self, name))
        try:
            object.__setattr__(self, "method", OfflineMethod(self.method))
        except ValueError:
            raise ConfigError.unknown("method", str(self.method), [m.value for m in OfflineMethod]) from None


_EXPERIMENT_PARTS = (
    ("backends", (SGLangBackend, VLLMBackend, TRTLLMBackend, SimBackend, ExternalBackend), "backends, e.g. (SimBackend(),)"),
    ("online", Online, "Online(...) sweeps, e.g. (Online(concurrency=[4], ...),)"),
    ("offline", Offline, "Offline(...) sweeps, e.g. (Offline(batch_sizes=[32], ...),)"),
)


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
    dataset_path: str | None = None
    force_output_len: bool = False  # sharegpt/custom/trace: output_len for every request, not the file's
    time_scale: float | None = None  # trace only
    num_turns: int | None = None  # multiturn only (num_prompts is then turns of every session)
    think_time_s: float | None = None  # multiturn only
    ramp_up: str | None = None  # linear | exponential; see Online
    ramp_start: float | None = None
    ramp_up_s: float | None = None  # concurrency ramps only
    hardware: str | None = None  # Hardware.name the backend is paired with; None: none given
    engine: str | None = None  # the backend's kind: sglang, vllm, trtllm, sim, external
    repeat: int = 1  # 1..Experiment.repeats
    seed: int = 0  # prompts and arrivals: the experiment's seed + repeat - 1
    model: str | None = None  # the experiment's model (a resumed run must not mix two)

    @property
    def runs_in_engine(self) -> bool:
        """An offline cell for the backend's in-process engine: it runs once the server has given its GPUs back."""
        return self.mode is Mode.OFFLINE and self.offline_method is OfflineMethod.ENGINE

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode.value
        d["offline_method"] = self.offline_method.value if self.offline_method else None
        d["request_rate"] = "inf" if math.isinf(self.request_rate) else self.request_rate
        return d


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """Sampling parameters every request of the experiment sends, to every backend alike.

    temperature 0.0 (greedy) is the default, as in the seed benchmark and vLLM's ``--temperature``
    default for ``vllm bench serve``; ``None`` leaves a field out of the request (the server's
    default applies). top_k -1 means "all tokens" to vLLM and SGLang. ``extra_body`` is merged
    into every request body last, so it can add fields (``{"repetition_penalty": 1.1}``) or
    override raybench's. The output length is forced separately (ignore_eos, min_tokens).
    """

    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature is not None and not (_real(self.temperature) and self.temperature >= 0):
            raise ConfigError.invalid("temperature", self.temperature, "a number >= 0, or None to send none")
        if self.top_p is not None and not (_real(self.top_p) and 0 < self.top_p <= 1):
            raise ConfigError.invalid("top_p", self.top_p, "a number with 0 < top_p <= 1, or None to send none")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool)
                                       or not (self.top_k == -1 or self.top_k >= 1)):
            raise ConfigError.invalid("top_k", self.top_k, "an integer >= 1, -1 for all tokens, or None to send none")
        object.__setattr__(self, "extra_body", _json_object("extra_body", self.extra_body))

    def client_settings(self) -> dict[str, Any]:
        """The ClientConfig fields these decide."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "extra_body": dict(self.extra_body)}

    def to_json(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "extra_body": dict(self.extra_body)}


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_object(name: str, value: Any) -> dict[str, Any]:
    import orjson

    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError.invalid(name, value, 'a JSON object with string keys, e.g. {"repetition_penalty": 1.1}')
    try:
        return orjson.loads(orjson.dumps(dict(value)))
    except (TypeError, orjson.JSONEncodeError) as err:
        raise ConfigError.invalid(name, value, f"JSON values only ({err})") from err


#: a warm-up request's output cap: the warm-up checks the server answers, it does not load it
WARMUP_MAX_TOKENS = 16


@dataclass(frozen=True, kw_only=True)
class Experiment:
    name: str
    model: str
    backends: tuple[Backend, ...]
    online: tuple[Online, ...] = ()
    offline: tuple[Offline, ...] = ()
    seed: int = 0
    # each cell runs this many times, each repeat with its own seed (seed, seed + 1, ...), so
    # repeats are independent samples and a prefix cache cannot carry one repeat into the next
    repeats: int = 1
    warmup_requests: int = 1
    compat: str = "raybench"
    goodput_slos_ms: dict[str, float] = field(default_factory=dict)
    # run only the cells a bisection needs to find the highest concurrency (or rate) meeting
    # goodput_slos_ms; None: run every cell (see raybench/search.py)
    search: SloSearch | None = None
    # backend name -> the hardware it runs on; a paired backend asks Ray for {resource: count}
    hardware: Mapping[str, Hardware] = field(default_factory=dict)
    # False: one connection per request, for servers that close kept-alive connections
    keepalive: bool = True
    # prompts: the tokenizer (a local directory with tokenizer.json, or a Hugging Face name) whose
    # vocabulary random prompts draw from; None: the model's own where it loads, the simulator's
    # word count on the simulator (see raybench/prompting.py). token_id_range (low, high):
    # ids from [low, high) instead, no tokenizer (a model whose tokenizer is not at hand).
    tokenizer: str | None = None
    tokenizer_revision: str | None = None
    token_id_range: tuple[int, int] | None = None
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        if not isinstance(self.keepalive, bool):
            raise ConfigError.invalid("keepalive", self.keepalive, "True or False")
        for name, kind, example in _EXPERIMENT_PARTS:
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, kind) for v in value):
                raise ConfigError.invalid(name, value, f"a list/tuple of {example}")
            object.__setattr__(self, name, tuple(value))
        for name in ("name", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError.invalid(name, getattr(self, name), "a non-empty string")
        # the name is the run directory's and a tag on every Ray metric, which takes ASCII only;
        # names without a letter or digit would all share the directory 'unnamed'
        if not (self.name.isascii() and self.name.isprintable() and any(c.isalnum() for c in self.name)):
            raise ConfigError.invalid("name", self.name, "printable ASCII with a letter or digit (it names the run "
                                      "directory and tags Ray's metrics), e.g. 'deepseek_r1'")
        self._check_goodput()
        self._pair_hardware()
        self._check_search()
        for sweep in (*self.online, *self.offline):
            for name in sweep.only:
                if name not in {b.name for b in self.backends}:
                    raise ConfigError.unknown("only", name, [b.name for b in self.backends])
        if not self.backends:
            raise ConfigError.invalid("backends", (), "at least one backend")
        if not (self.online or self.offline):
            raise ConfigError.invalid("online/offline", (), "at least one sweep")
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ConfigError.invalid("backends", names, "distinct backend names")
        if self.compat not in ("raybench", "sglang", "vllm"):
            raise ConfigError.unknown("compat", self.compat, ("raybench", "sglang", "vllm"))
        _positive_int("repeats", self.repeats)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError.invalid("seed", self.seed, "an integer >= 0")
        if not isinstance(self.warmup_requests, int) or isinstance(self.warmup_requests, bool) or self.warmup_requests < 0:
            raise ConfigError.invalid("warmup_requests", self.warmup_requests, "an integer >= 0")
        self._check_prompts()

    def _check_prompts(self) -> None:
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer.strip()):
            raise ConfigError.invalid("tokenizer", self.tokenizer, "a local directory with tokenizer.json or a Hugging Face model name")
        if self.tokenizer_revision is not None and (not isinstance(self.tokenizer_revision, str) or not self.tokenizer_revision):
            raise ConfigError.invalid("tokenizer_revision", self.tokenizer_revision, "a branch, tag or commit, or None")
        if self.token_id_range is not None:
            if isinstance(self.token_id_range, (str, bytes)) or len(tuple(self.token_id_range)) != 2:
                raise ConfigError.invalid("token_id_range", self.token_id_range, "(low, high): ids from low to high - 1")
            try:
                object.__setattr__(self, "token_id_range", require_vocab("token_id_range", *self.token_id_range))
            except ConfigError:
                raise ConfigError.invalid("token_id_range", self.token_id_range,
                                          "(low, high) with 0 <= low < high <= 2**31: ids from low to high - 1") from None
            if self.tokenizer is not None:
                raise ConfigError("give tokenizer or token_id_range, not both: with a tokenizer, ids come from its vocabulary")
        if not isinstance(self.sampling, Sampling):
            raise ConfigError.invalid("sampling", self.sampling, "a Sampling(temperature=0.0, top_p=..., top_k=..., extra_body={...})")

    def _check_goodput(self) -> None:
        slos = self.goodput_slos_ms
        allowed = 'keys ttft, tpot, e2el mapped to finite milliseconds > 0, e.g. {"ttft": 2000, "tpot": 100}'
        if not isinstance(slos, Mapping):
            raise ConfigError.invalid("goodput_slos_ms", slos, allowed)
        for key, value in slos.items():
            # an infinite SLO would pass here and fail only once the cell ran (and again on every resume)
            if key not in ("ttft", "tpot", "e2el") or not (math.isfinite(_number("goodput_slos_ms", value, allowed))
                                                           and value > 0):
                raise ConfigError.invalid("goodput_slos_ms", dict(slos), allowed)

    def _check_search(self) -> None:
        if self.search is None:
            return
        if not isinstance(self.search, SloSearch):
            raise ConfigError.invalid("search", self.search, 'SloSearch(over="concurrency") or None')
        if not self.goodput_slos_ms:
            raise ConfigError.invalid("goodput_slos_ms", self.goodput_slos_ms, "the SLOs a search meets, e.g. {\"ttft\": 500}")
        if len(self.online) != 1 or self.offline:
            raise ConfigError.invalid("online", len(self.online), "exactly one online sweep (and no offline) with a search")
        if self.search.over == "request_rate" and len(self.online[0].concurrency) != 1:
            raise ConfigError.invalid("concurrency", self.online[0].concurrency, "one value when the search is over request_rate")

    def _pair_hardware(self) -> None:
        if not isinstance(self.hardware, Mapping):
            raise ConfigError.invalid("hardware", self.hardware, 'backend names mapped to Hardware, e.g. {"vllm-h200": Hardware(name="H200")}')
        hardware = dict(self.hardware)
        names = [b.name for b in self.backends]
        for key, hw in hardware.items():
            if key not in names:
                raise ConfigError.unknown("hardware", key, names)
            if not isinstance(hw, Hardware):
                raise ConfigError.invalid(f"hardware[{key!r}]", hw, 'a Hardware(name="H200", count=8)')
        object.__setattr__(self, "hardware", hardware)
        backends = []
        for b in self.backends:
            hw = hardware.get(b.name)
            # the simulator reserves nothing from Ray (it only models its GPUs), so it runs anywhere
            if hw is not None and not isinstance(b, SimBackend) and not set(hw.ray_resources) & set(b.placement.resources):
                # pairing is what places the server: Ray puts it only on a node with that resource
                placement = dataclasses.replace(b.placement, resources={**b.placement.resources, **hw.ray_resources})
                b = dataclasses.replace(b, placement=placement)
            backends.append(b)
        object.__setattr__(self, "backends", tuple(backends))

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    def cells(self) -> list[Cell]:
        """Every cell, grouped by backend; repeats of a backend's cells follow one pass after another.

        Repeat 1 keeps the plain id, so adding repeats to a finished run only adds cells.
        """
        cells: list[Cell] = []
        for b in self.backends:
            first = self._backend_cells(b)
            for repeat in range(1, self.repeats + 1):
                cells += first if repeat == 1 else [
                    dataclasses.replace(c, id=f"{c.id}-rep{repeat}", repeat=repeat, seed=self.seed + repeat - 1)
                    for c in first
                ]
        ids = [c.id for c in cells]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"two cells share the id {dup!r}: remove the repeated sweep entry")
        return cells

    def _backend_cells(self, b: Backend) -> list[Cell]:
        cells: list[Cell] = []
        hw = self.hardware.get(b.name)
        # cells without hardware keep the ids they had before hardware existed
        key = f"{b.name}.{hw.name}" if hw else b.name
        engine = getattr(b, "kind", None)
        common = {"hardware": hw.name if hw else None, "engine": engine.value if engine else None, "seed": self.seed,
                  "model": self.model}
        for s in self.online:
            if s.only and b.name not in s.only:
                continue
            prefix = s.dataset == "prefix"
            rates = self.search.grid if self.search is not None and self.search.over == "request_rate" else (s.request_rate,)
            for c, request_rate in ((c, r) for c in s.concurrency for r in rates):
                rate = "" if math.isinf(request_rate) else f"-r{request_rate:g}"
                if s.ramp_up is not None:
                    rate += f"-{s.ramp_up[:3]}{s.ramp_start:g}" + (f"in{s.ramp_up_s:g}s" if math.isinf(request_rate) else "")
                cells.append(
                    Cell(
                        id=f"{key}-online-c{c}-{_workload_tag(s)}{rate}", **common,
                        backend=b.name, mode=Mode.ONLINE, concurrency=c,
                        num_prompts=_num_requests(s),
                        input_len=s.input_len, output_len=s.output_len, dataset=s.dataset,
                        range_ratio=s.range_ratio, request_rate=request_rate,
                        burstiness=s.burstiness, prefix_len=s.prefix_len if prefix else 0,
                        num_groups=s.num_groups if prefix else None,
                        prompts_per_group=s.prompts_per_group if prefix else None,
                        dataset_path=s.dataset_path, force_output_len=s.force_output_len,
                        time_scale=s.time_scale if s.dataset == "trace" else None,
                        num_turns=s.num_turns if s.dataset == "multiturn" else None,
                        think_time_s=s.think_time_s if s.dataset == "multiturn" else None,
                        ramp_up=s.ramp_up, ramp_start=s.ramp_start,
                        ramp_up_s=s.ramp_up_s if s.ramp_up is not None and math.isinf(request_rate) else None,
                    )
                )
        for o in self.offline:
            if o.only and b.name not in o.only:
                continue
            for bs in o.batch_sizes:
                cells.append(
                    Cell(
                        id=f"{key}-offline-{o.method.value}-b{bs}-i{o.input_len}-o{o.output_len}", **common,
                        backend=b.name, mode=Mode.OFFLINE, batch_size=bs, num_prompts=bs,
                        input_len=o.input_len, output_len=o.output_len, offline_method=o.method,
                    )
                )
        return cells


def _workload_tag(s: Online) -> str:
    """The workload's part of a cell id: the synthetic lengths, or the file and its replay settings."""
    output = f"-o{s.output_len}" if s.force_output_len else ""
    if s.dataset == "trace":
        return f"trace-{Path(s.dataset_path).stem}-n{s.num_prompts}-x{s.time_scale:g}{output}"
    if s.dataset in FILE_DATASETS:
        return f"{s.dataset}-{Path(s.dataset_path).stem}-n{s.num_prompts}{output}"
    if s.dataset == "multiturn":
        return f"mt{s.num_prompts}x{s.num_turns}-i{s.input_len}-o{s.output_len}"
    tag = f"p{s.prefix_len}" if s.dataset == "prefix" else ""
    return f"i{s.input_len}{tag}-o{s.output_len}"


def _num_requests(s: Online) -> int:
    """Requests in one cell of the sweep (a trace may hold fewer records: the runner counts those)."""
    if s.dataset == "prefix":
        return s.num_groups * s.prompts_per_group
    if s.dataset == "multiturn":
        return s.num_prompts * s.num_turns
    return s.num_prompts


def load_experiment(path: str | Path) -> Experiment:
    """Run an experiment file and return its ``experiment``; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"experiment file {path} does not exist")
    if not path.is_file():  # a FIFO would block the read, a device never end: name what it is instead
        raise ConfigError(f"experiment file {path} is not a regular file: give the .py file that defines "
                          "`experiment = Experiment(...)`")
    try:
        namespace = runpy.run_path(str(path), run_name="__raybench_experiment__")
    except SyntaxError as err:
        # a null byte fails before any line is read: no line number, and likely not Python at all
        where = f"{path}:{err.lineno}" if err.lineno is not None else str(path)
        raise ConfigError(f"{where}: syntax error: {err.msg}") from err
    except ConfigError as err:
        raise ConfigError(f"{_where(path, err)}: {err}") from err
    except TypeError as err:
        raise ConfigError(f"{_where(path, err)}: {err}{_allowed_fields(str(err))}") from err
    except Exception as err:  # the file is the user's code: a NameError in it is bad input, not a crash
        raise ConfigError(f"{_where(path, err)}: {type(err).__name__}: {err}") from err
    except SystemExit as err:  # else raybench would end with the file's status, saying nothing
        raise ConfigError(f"{_where(path, err)}: the experiment file called sys.exit({err.code!r}); an experiment "
                          "file only defines `experiment = Experiment(...)`") from err
    experiment = namespace.get("experiment")
    if not isinstance(experiment, Experiment):
        found = "" if experiment is None else f" (its `experiment` is of type {type(experiment).__name__})"
        raise ConfigError(f"{path} must define `experiment = Experiment(...)`{found}")
    return experiment


def _where(path: Path, err: BaseException) -> str:
    """``file:line`` of the experiment file's line that raised (the innermost one in that file)."""
    line = None
    tb = err.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}" if line is not None else str(path)


_UNEXPECTED = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def _allowed_fields(message: str) -> str:
    """For an unknown keyword on one of the experiment's dataclasses: the fields it has."""
    match = _UNEXPECTED.search(message)
    known = {c.__name__: c for c in (Experiment, Online, Offline, Hardware, Sampling, Placement, Container, SGLangBackend,
                                     VLLMBackend, TRTLLMBackend, SimBackend, ExternalBackend)}
    if match is None or match.group(1) not in known:
        return ""
    names = sorted(f.name for f in dataclasses.fields(known[match.group(1)]) if f.init)
    return f"; allowed: {', '.join(names)}"

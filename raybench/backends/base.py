"""What every backend is made of: its kind, where Ray puts it, how requests talk to it.

A backend is data. The process backends (sglang, vllm, trtllm, sim) share ``ProcessBackend``:
typed options plus free ``extra_args``, an environment, an optional container image, a Ray
placement, and the endpoints raybench uses besides the OpenAI API (readiness, cache reset,
version). Each one turns itself into an argv with ``server_argv``; ``launch_spec`` adds the
container around it. Nothing here starts a process: ``server_actor.py`` does that.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from raybench.backends.container import Container
from raybench.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BackendKind(str, enum.Enum):
    SIM = "sim"  # the built-in simulator, started by raybench
    EXTERNAL = "external"  # a URL someone else runs; no process
    SGLANG = "sglang"  # python -m sglang.launch_server
    VLLM = "vllm"  # vllm serve
    TRTLLM = "trtllm"  # trtllm-serve


class Platform(str, enum.Enum):
    """Which GPU stack the server runs on; it decides the device flags and the visible-devices variable."""

    CUDA = "cuda"  # NVIDIA: Ray sets CUDA_VISIBLE_DEVICES for the actor
    ROCM = "rocm"  # AMD: Ray sets HIP_VISIBLE_DEVICES for the actor

    @property
    def visible_devices_env(self) -> str:
        return "CUDA_VISIBLE_DEVICES" if self is Platform.CUDA else "HIP_VISIBLE_DEVICES"


@dataclass(frozen=True, kw_only=True)
class Placement:
    """What the ServerActor asks Ray for: GPUs, custom resources such as ``{"H200": 8}``.

    ``num_gpus=None`` means what the backend's parallelism needs (tp x pp for vLLM and
    TensorRT-LLM, tp for SGLang, none for the simulator).
    """

    num_gpus: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    num_cpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_gpus is not None and (not _is_int(self.num_gpus) or self.num_gpus < 0):
            raise ConfigError.invalid("placement.num_gpus", self.num_gpus, "None or an integer >= 0")
        resources = dict(self.resources)
        for key, value in resources.items():
            if not isinstance(key, str) or not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError.invalid("placement.resources", self.resources, 'names mapped to amounts > 0, e.g. {"H200": 8}')
        object.__setattr__(self, "resources", resources)
        if not isinstance(self.num_cpus, (int, float)) or self.num_cpus < 0:
            raise ConfigError.invalid("placement.num_cpus", self.num_cpus, "a number >= 0")


@dataclass(frozen=True, kw_only=True)
class Dialect:
    """Which request fields the server takes; raybench leaves out what it does not."""

    ignore_eos: bool = True  # {"ignore_eos": true} forces the output length
    min_tokens: bool = True  # {"min_tokens": N} forces it too (vLLM SamplingParams)
    include_usage: bool = True  # stream_options.include_usage: the server's token counts; False sends no stream_options
    continuous_usage_stats: bool = True  # stream_options.continuous_usage_stats: usage on every chunk
    token_id_prompts: bool = True  # "prompt": [token ids] on /v1/completions

    def client_settings(self) -> dict[str, Any]:
        """The ClientConfig fields this dialect decides."""
        return {
            "ignore_eos": self.ignore_eos,
            "send_min_tokens": self.min_tokens,
            "include_usage": self.include_usage,
            "continuous_usage_stats": self.continuous_usage_stats,
        }


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """HTTP paths besides the OpenAI API. Readiness is GET ``health`` == 200, then ``models`` lists the model."""

    health: str = "/health"
    models: str = "/v1/models"
    cache_reset: str | None = None  # POST; None: the server has no such endpoint
    version: tuple[str, ...] = ()  # GET paths tried in order; the JSON's "version" field


@dataclass(frozen=True, kw_only=True)
class LogFindings:
    """What a server's log, read once it is ready, says about how it really runs."""

    facts: Mapping[str, str | None] = field(default_factory=dict)  # for the server's record, e.g. the attention backend
    warnings: tuple[str, ...] = ()  # one line each, for the run's report


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """The process a ServerActor starts, resolved on the node it runs on."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    container_name: str | None = None
    container_runtime: str | None = None


@dataclass(frozen=True, kw_only=True)
class ProcessBackend:
    """Options every backend that raybench starts has. Subclasses add their typed options."""

    kind: ClassVar[BackendKind]
    endpoints: ClassVar[Endpoints] = Endpoints()
    # flags raybench sets itself; extra_args may not repeat them
    reserved_flags: ClassVar[Mapping[str, str]] = {}

    name: str
    model_path: str | None = None  # what to load; None: the experiment's model name
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    platform: Platform = Platform.CUDA
    container: Container | None = None
    placement: Placement = Placement()
    host: str | None = None  # address to bind; None: the node's IP (reachable from client nodes)
    ready_timeout_s: float = 1800.0  # DeepSeek-R1 takes many minutes to load
    # how long the ServerActor may wait for Ray to find it room (its GPUs held by another server or
    # job) before the run fails; counted apart from ready_timeout_s, which starts once it is placed
    place_timeout_s: float = 600.0
    stop_grace_s: float = 30.0
    reset_cache: bool = False  # POST the cache-reset endpoint after each cell's warm-up
    dialect: Dialect = Dialect()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError.invalid("name", self.name, "letters, digits, '.', '_' or '-', starting with a letter or digit")
        object.__setattr__(self, "extra_args", _str_tuple("extra_args", self.extra_args))
        self._check_extra_args()
        env = dict(self.env)
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError.invalid("env", self.env, 'names mapped to strings, e.g. {"VLLM_ATTENTION_BACKEND": "FLASHMLA"}')
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "platform", enum_value("platform", Platform, self.platform))
        for name in ("ready_timeout_s", "place_timeout_s", "stop_grace_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigError.invalid(name, value, "a number of seconds > 0")
        if self.container is not None and not isinstance(self.container, Container):
            raise ConfigError.invalid("container", self.container, "a Container(image=...) or None")
        if not isinstance(self.placement, Placement):
            raise ConfigError.invalid("placement", self.placement, "a Placement(num_gpus=..., resources=...)")
        if self.reset_cache and self.endpoints.cache_reset is None:
            raise ConfigError.invalid("reset_cache", True, f"False: {self.kind.value} has no cache-reset endpoint")

    def _check_extra_args(self) -> None:
        for arg in self.extra_args:
            flag = arg.split("=", 1)[0]
            if flag in self.reserved_flags:
                raise ConfigError(f"extra_args: {flag} is set by raybench ({self.reserved_flags[flag]}); remove it from extra_args")

    # -- what subclasses define ------------------------------------------------------------------
    def server_argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        raise NotImplementedError

    def default_num_gpus(self) -> int:
        return 0

    def served_model(self, model: str) -> str:
        """The name /v1/models lists and requests carry."""
        return model

    def served_model_names(self, model: str) -> tuple[str, ...]:
        """Every name the server may list in /v1/models, preferred first; readiness accepts any of them."""
        return (self.served_model(model),)

    def with_listed_model(self, name: str) -> ProcessBackend:
        """This backend with requests carrying ``name``, the one its running server listed; the same
        backend where ``served_model`` already knows it."""
        return self

    def server_env(self) -> dict[str, str]:
        return dict(self.env)

    def read_startup_log(self, log: str) -> LogFindings:
        """What the server's log up to readiness says of settings it may have overridden in silence;
        nothing unless the backend knows the lines its server prints."""
        return LogFindings()

    def timing_identity(self) -> dict[str, Any] | None:
        """What decides the times a simulated server gives, for a resume to compare (None: a real
        server, whose times are its own: a resume compares its cells' settings, not the server's)."""
        return None

    def may_cache_prefixes(self, version: str | None) -> bool:
        """Whether the server, at ``version`` (None: not known), may answer a prompt it saw before
        from a prefix cache; True unless its launch or version says it does not."""
        return True

    # -- shared --------------------------------------------------------------------------------
    def load_path(self, model: str) -> str:
        return self.model_path or model

    @property
    def reserved_gpus(self) -> int:
        """GPUs Ray reserves for the server (Placement.num_gpus, or what the parallelism needs)."""
        if self.placement.num_gpus is not None:
            return self.placement.num_gpus
        return self.default_num_gpus()

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.placement.num_cpus, "num_gpus": self.reserved_gpus}
        if self.placement.resources:
            options["resources"] = dict(self.placement.resources)
        return options

    def launch_spec(self, *, model: str, host: str, port: int, python: str, gpu_ids: Sequence[str] = ()) -> LaunchSpec:
        """The argv and env to run on the node; wrapped in ``docker/podman run`` when ``container`` is set."""
        env = self.server_env()
        if self.container is None:
            return LaunchSpec(argv=tuple(self.server_argv(model=model, host=host, port=port, python=python)), env=env)
        inner = self.server_argv(model=model, host=host, port=port, python="python3")
        name = f"raybench-{self.name}-{port}"
        argv = self.container.run_argv(inner, name=name, env=env, platform=self.platform.value, gpu_ids=gpu_ids)
        return LaunchSpec(argv=tuple(argv), env={}, container_name=name, container_runtime=self.container.runtime.value)


def enum_value(name: str, enum_cls: type[enum.Enum], value: object) -> Any:
    """``enum_cls(value)``, or a ConfigError that names the field and lists the choices."""
    try:
        return enum_cls(value)
    except ValueError:
        raise ConfigError.unknown(name, str(value), [m.value for m in enum_cls]) from None


def flag_value(flag: str, value: object) -> list[str]:
    """``[flag, str(value)]``, or nothing for None; booleans are present-or-absent switches."""
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    return [flag, str(value)]


def check_positive(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < 1:
        raise ConfigError.invalid(name, value, "None or an integer >= 1" if optional else "an integer >= 1")


def check_fraction(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1):
        raise ConfigError.invalid(name, value, "None or a number in (0, 1]")


def _str_tuple(name: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not all(isinstance(v, str) for v in values):
        raise ConfigError.invalid(name, values, "a tuple of strings, e.g. ('--enable-metrics',) or ('--seed', '1')")
    return tuple(values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

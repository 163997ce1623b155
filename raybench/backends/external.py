"""A server someone else runs: raybench only sends it requests, and never starts or stops it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from raybench.backends.base import BackendKind, Dialect
from raybench.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ExternalBackend:
    """A server someone else runs: raybench only sends it requests.

    ``cache_reset`` names its cache-reset path when the experiment should flush between cells
    (``/flush_cache`` for SGLang; ``/reset_prefix_cache`` for vLLM started with VLLM_SERVER_DEV_MODE=1).
    """

    kind: ClassVar[BackendKind] = BackendKind.EXTERNAL

    name: str
    url: str
    dialect: Dialect = Dialect()
    cache_reset: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError.invalid("url", self.url, "an http:// or https:// URL")
        if self.cache_reset is not None and not self.cache_reset.startswith("/"):
            raise ConfigError.invalid("cache_reset", self.cache_reset, "None or a path such as /flush_cache")

    @property
    def reset_cache(self) -> bool:
        return self.cache_reset is not None

    def served_model(self, model: str) -> str:
        return model

    def may_cache_prefixes(self, version: str | None) -> bool:
        return True  # someone else's server: nothing says it does not

    def timing_identity(self) -> None:
        return None  # its times are its own (raybench sim started by hand included: nothing says so)

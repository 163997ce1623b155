"""A server someone else runs: raybench only sends it requests, and never starts or stops it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

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
        # else a URL without a host or with a port past 65535 reaches the HTTP client, whose error reads as
        # a server that does not answer
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - parses the port, which raises ValueError where it is out of range
        except ValueError as err:
            raise ConfigError.invalid("url", self.url, f"a URL with a valid host and port 1-65535 ({err})") from None
        if not parts.hostname:
            raise ConfigError.invalid("url", self.url, "a URL with a host, such as http://127.0.0.1:8000")
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

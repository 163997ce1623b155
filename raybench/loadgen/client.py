"""What the load generator sends: the client settings and the request bodies.

Bodies are serialised once, before the clock starts, so the hot path only writes bytes.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from raybench.errors import ConfigError
from raybench.workloads.base import RequestSpec, prompt_text

DEFAULT_READ_BUFSIZE = 10 * 2**20  # long contexts collapse with aiohttp's 256 KiB default


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """How requests are made to one OpenAI-compatible server.

    Output length is forced (``ignore_eos`` and ``min_tokens`` = ``max_tokens``) and counted
    from the server's usage (``include_usage``, ``continuous_usage_stats``): a server that
    rejects one of these fields can be told not to send it. Without ``include_usage`` no
    ``stream_options`` is sent, and output tokens are counted one per streamed event.
    """

    base_url: str
    model: str
    endpoint: str = "/v1/completions"
    stream: bool = True
    ignore_eos: bool = True
    send_min_tokens: bool = True
    include_usage: bool = True
    continuous_usage_stats: bool = True  # sent only with include_usage (vLLM ignores it alone)
    temperature: float | None = 0.0
    top_p: float | None = None  # None: not sent (the server's default)
    top_k: int | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    request_timeout_s: float = 3600.0
    # None by default: a request queued behind 1024 others at a server can wait many minutes
    # for its first byte, and that is a measurement, not a failure
    stall_timeout_s: float | None = None
    read_bufsize: int = DEFAULT_READ_BUFSIZE
    # False: one connection per request, for servers that close connections they advertised
    # as kept alive
    keepalive: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError.invalid("url", self.base_url, "an http:// or https:// URL such as http://127.0.0.1:8000")
        if not self.endpoint.startswith("/"):
            raise ConfigError.invalid("endpoint", self.endpoint, "a path starting with '/', e.g. /v1/completions")
        if not self.model:
            raise ConfigError.invalid("model", self.model, "the served model name (see GET /v1/models)")
        if self.request_timeout_s <= 0:
            raise ConfigError.invalid("request_timeout_s", self.request_timeout_s, "a positive number of seconds")
        if self.stall_timeout_s is not None and self.stall_timeout_s <= 0:
            raise ConfigError.invalid("stall_timeout_s", self.stall_timeout_s, "a positive number of seconds, or None")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError.invalid("temperature", self.temperature, ">= 0")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError.invalid("top_p", self.top_p, "0 < top_p <= 1, or None")
        if self.top_k is not None and not (self.top_k == -1 or self.top_k >= 1):
            raise ConfigError.invalid("top_k", self.top_k, "an integer >= 1, -1 for all tokens, or None")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "extra_body", types.MappingProxyType(dict(self.extra_body)))
        object.__setattr__(self, "headers", types.MappingProxyType(dict(self.headers)))

    @property
    def url(self) -> str:
        return self.base_url + self.endpoint

    @property
    def chat(self) -> bool:
        return "chat" in self.endpoint


def request_body(client: ClientConfig, spec: RequestSpec) -> bytes:
    """The JSON body for one request, as vLLM's and SGLang's OpenAI servers accept it."""
    body: dict[str, Any] = {"model": client.model}
    if client.chat:
        body["messages"] = [{"role": "user", "content": prompt_text(spec)}]
        body["max_completion_tokens"] = spec.max_tokens
    else:
        body["prompt"] = spec.prompt_token_ids if spec.prompt_text is None else spec.prompt_text
    body["max_tokens"] = spec.max_tokens
    if client.send_min_tokens:
        body["min_tokens"] = spec.max_tokens
    if client.ignore_eos:
        body["ignore_eos"] = True
    if client.temperature is not None:
        body["temperature"] = client.temperature
    if client.top_p is not None:
        body["top_p"] = client.top_p
    if client.top_k is not None:
        body["top_k"] = client.top_k
    body["stream"] = client.stream
    if client.stream and client.include_usage:
        options = {"include_usage": True}
        if client.continuous_usage_stats:
            options["continuous_usage_stats"] = True
        body["stream_options"] = options
    body.update(client.extra_body)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


# per-request fields: the prompt and its lengths; what is left of a body is how every request samples
_PER_REQUEST_FIELDS = ("model", "prompt", "messages", "max_tokens", "max_completion_tokens", "min_tokens")


def sent_parameters(client: ClientConfig) -> dict[str, Any]:
    """What every request sends besides its prompt and lengths (sampling, forcing, streaming, extra body).

    Read off a real body, so the record is what went on the wire, extra_body's overrides included.
    """
    probe = RequestSpec(request_id=0, prompt_token_ids=np.zeros(1, dtype=np.int32), prompt_tokens=1, max_tokens=1)
    body = orjson.loads(request_body(client, probe))
    sent = {k: v for k, v in body.items() if k not in _PER_REQUEST_FIELDS}
    sent["min_tokens"] = "max_tokens" if "min_tokens" in body else None
    sent["endpoint"] = client.endpoint
    return sent


def request_headers(client: ClientConfig, cell_id: str, request_id: int) -> dict[str, str]:
    """Per-request headers; X-Request-Id lets a server's own log be matched to our rows."""
    headers = {"Content-Type": "application/json", "X-Request-Id": f"{cell_id}-{request_id}"}
    headers.update(client.headers)
    return headers

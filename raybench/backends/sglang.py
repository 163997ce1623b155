"""SGLang's server: ``python -m sglang.launch_server --model-path M --tp-size N --host H --port P ...``.

Flags are SGLang's ``ServerArgs.add_cli_args`` (``python/sglang/srt/server_args.py``; docs:
"Server Arguments"). ``--tp`` in the seed's command is argparse's abbreviation of
``--tp-size``; raybench writes the full name. Cache reset: ``POST /flush_cache`` (answers 400
while requests are running; ``python/sglang/srt/entrypoints/http_server.py``); the seed's
client flushed before every online run. Version: the ``version`` field of
``GET /get_server_info`` (``/server_info`` in newer releases).

Request dialect: ``ignore_eos`` and ``min_tokens`` are SGLang sampling extras on
``/v1/completions``; its 0.4.x ``StreamOptions`` has ``include_usage`` only, so raybench does
not ask for ``continuous_usage_stats`` and counts tokens from the final usage instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from raybench.backends.base import (
    BackendKind,
    Dialect,
    Endpoints,
    ProcessBackend,
    check_fraction,
    check_positive,
    flag_value,
)

LAUNCH_MODULE = "sglang.launch_server"


@dataclass(frozen=True, kw_only=True)
class SGLangBackend(ProcessBackend):
    kind: ClassVar[BackendKind] = BackendKind.SGLANG
    endpoints: ClassVar[Endpoints] = Endpoints(cache_reset="/flush_cache", version=("/server_info", "/get_server_info"))
    reserved_flags: ClassVar[dict[str, str]] = {
        "--host": "the node's address", "--port": "a free port", "--model-path": "the experiment's model or model_path=",
        "--tp-size": "use tp=", "--tensor-parallel-size": "use tp=", "--tp": "use tp=",
        "--served-model-name": "the experiment's model name",
    }

    name: str = "sglang"
    python: str | None = None  # interpreter with sglang installed; None: the actor's own (python3 in a container)
    tp: int = 1
    dp: int | None = None
    enable_dp_attention: bool = False
    trust_remote_code: bool = False
    context_length: int | None = None
    mem_fraction_static: float | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    disable_radix_cache: bool = False
    enable_cache_report: bool = False  # usage.prompt_tokens_details.cached_tokens on every response
    dialect: Dialect = Dialect(continuous_usage_stats=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("tp", self.tp)
        for name in ("dp", "context_length", "max_running_requests"):
            check_positive(name, getattr(self, name), optional=True)
        check_fraction("mem_fraction_static", self.mem_fraction_static)

    def default_num_gpus(self) -> int:
        # dp attention splits the tp group; plain dp replicates it
        return self.tp if self.enable_dp_attention else self.tp * (self.dp or 1)

    def server_argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        interpreter = python if self.container is not None else (self.python or python)
        argv = [interpreter, "-m", LAUNCH_MODULE, "--model-path", self.load_path(model), "--tp-size", str(self.tp)]
        argv += flag_value("--dp-size", self.dp)
        argv += flag_value("--enable-dp-attention", self.enable_dp_attention)
        argv += flag_value("--trust-remote-code", self.trust_remote_code)
        argv += flag_value("--context-length", self.context_length)
        argv += flag_value("--mem-fraction-static", self.mem_fraction_static)
        argv += flag_value("--max-running-requests", self.max_running_requests)
        argv += flag_value("--chunked-prefill-size", self.chunked_prefill_size)
        argv += flag_value("--disable-radix-cache", self.disable_radix_cache)
        argv += flag_value("--enable-cache-report", self.enable_cache_report)
        if self.model_path and self.model_path != model:
            argv += ["--served-model-name", model]
        return argv + ["--host", host, "--port", str(port), *self.extra_args]

    def may_cache_prefixes(self, version: str | None) -> bool:
        return not (self.disable_radix_cache or "--disable-radix-cache" in self.extra_args)

    def engine_kwargs(self, model: str) -> dict[str, object]:
        """``sglang.Engine(**kwargs)`` for offline engine mode (ServerArgs field names)."""
        kwargs: dict[str, object] = {"model_path": self.load_path(model), "tp_size": self.tp}
        optional = {
            "dp_size": self.dp,
            "enable_dp_attention": self.enable_dp_attention or None,
            "trust_remote_code": self.trust_remote_code or None,
            "context_length": self.context_length,
            "mem_fraction_static": self.mem_fraction_static,
            "max_running_requests": self.max_running_requests,
            "chunked_prefill_size": self.chunked_prefill_size,
            "disable_radix_cache": self.disable_radix_cache or None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

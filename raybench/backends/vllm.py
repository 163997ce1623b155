"""vLLM's OpenAI server: ``vllm serve MODEL --tensor-parallel-size N --host H --port P ...``.

Flags are vLLM's engine and frontend arguments (docs: "Engine Arguments" and ``vllm serve
--help``; source: ``vllm/engine/arg_utils.py``, ``vllm/entrypoints/openai/cli_args.py``).
Environment: ``VLLM_ATTENTION_BACKEND`` picks the attention kernels (the seed's H200 run used
FLASHMLA). vLLM ignores a name it does not know (0.7.3: ``backend_name_to_enum`` returns None,
and an MLA model then gets Triton MLA), so ``read_startup_log`` compares the name with the
"Using ... backend" line vLLM logs and warns when they differ. On ROCm the seed set
``VLLM_USE_TRITON_FLASH_ATTN=0`` and ``VLLM_FP8_PADDING=0`` (``vllm/envs.py``).
``POST /reset_prefix_cache`` exists only when the server runs with ``VLLM_SERVER_DEV_MODE=1``
(``vllm/entrypoints/openai/api_server.py``), so ``reset_cache=True`` sets it. Version:
``GET /version`` -> ``{"version": ...}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from raybench.backends.base import (
    BackendKind,
    Endpoints,
    LogFindings,
    ProcessBackend,
    check_fraction,
    check_positive,
    flag_value,
)
from raybench.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class VLLMBackend(ProcessBackend):
    kind: ClassVar[BackendKind] = BackendKind.VLLM
    endpoints: ClassVar[Endpoints] = Endpoints(cache_reset="/reset_prefix_cache", version=("/version",))
    reserved_flags: ClassVar[dict[str, str]] = {
        "--host": "the node's address", "--port": "a free port", "--tensor-parallel-size": "use tp=",
        "-tp": "use tp=", "--pipeline-parallel-size": "use pp=", "-pp": "use pp=",
        "--served-model-name": "the experiment's model name",
    }

    name: str = "vllm"
    executable: str = "vllm"
    tp: int = 1
    pp: int = 1
    trust_remote_code: bool = False
    enable_prefix_caching: bool | None = None  # None: vLLM's default (on in the V1 engine)
    enable_chunked_prefill: bool = False
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    attention_backend: str | None = None  # VLLM_ATTENTION_BACKEND, e.g. "FLASHMLA"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("tp", self.tp)
        check_positive("pp", self.pp)
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            check_positive(name, getattr(self, name), optional=True)
        check_fraction("gpu_memory_utilization", self.gpu_memory_utilization)
        if self.enable_prefix_caching not in (None, True, False):
            raise ConfigError.invalid("enable_prefix_caching", self.enable_prefix_caching, "None, True or False")

    def default_num_gpus(self) -> int:
        return self.tp * self.pp

    def server_argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        argv = [self.executable, "serve", self.load_path(model)]
        argv += ["--tensor-parallel-size", str(self.tp)]
        if self.pp > 1:
            argv += ["--pipeline-parallel-size", str(self.pp)]
        argv += flag_value("--trust-remote-code", self.trust_remote_code)
        if self.enable_prefix_caching is not None:
            argv.append("--enable-prefix-caching" if self.enable_prefix_caching else "--no-enable-prefix-caching")
        argv += flag_value("--enable-chunked-prefill", self.enable_chunked_prefill)
        argv += flag_value("--max-model-len", self.max_model_len)
        argv += flag_value("--max-num-seqs", self.max_num_seqs)
        argv += flag_value("--max-num-batched-tokens", self.max_num_batched_tokens)
        argv += flag_value("--gpu-memory-utilization", self.gpu_memory_utilization)
        if self.model_path and self.model_path != model:
            argv += ["--served-model-name", model]
        return argv + ["--host", host, "--port", str(port), *self.extra_args]

    def server_env(self) -> dict[str, str]:
        env = dict(self.env)
        if self.attention_backend is not None:
            env.setdefault("VLLM_ATTENTION_BACKEND", self.attention_backend)
        if self.reset_cache:
            env.setdefault("VLLM_SERVER_DEV_MODE", "1")
        return env

    def read_startup_log(self, log: str) -> LogFindings:
        """The attention backend vLLM says it uses, and a warning when ``attention_backend`` asked for another."""
        logged = logged_attention_backend(log)
        wanted = self.server_env().get("VLLM_ATTENTION_BACKEND")
        if not (wanted and logged and _attention_key(wanted) != _attention_key(logged)):
            return LogFindings(facts={"attention_backend": logged})
        warning = (f"VLLM_ATTENTION_BACKEND={wanted} was set, but vLLM's log says it uses {logged}: this vLLM "
                   f"does not run {wanted} for this model, so the results measure {logged}")
        return LogFindings(facts={"attention_backend": logged}, warnings=(warning,))

    def may_cache_prefixes(self, version: str | None) -> bool:
        flags = {a.split("=", 1)[0] for a in self.extra_args}
        if "--no-enable-prefix-caching" in flags:
            return False
        if self.enable_prefix_caching is not None or "--enable-prefix-caching" in flags:
            return bool(self.enable_prefix_caching) or "--enable-prefix-caching" in flags
        # the default: off in the V0 engine, on in V1 (the default engine from 0.8.0; VLLM_USE_V1 picks one)
        engine = self.server_env().get("VLLM_USE_V1")
        if engine in ("0", "1"):
            return engine == "1"
        release = _release(version)
        return release is None or release >= (0, 8)

    def engine_kwargs(self, model: str) -> dict[str, object]:
        """``vllm.LLM(**kwargs)`` for offline engine mode: the same settings as the server."""
        kwargs: dict[str, object] = {"model": self.load_path(model), "tensor_parallel_size": self.tp}
        optional = {
            "pipeline_parallel_size": self.pp if self.pp > 1 else None,
            "trust_remote_code": self.trust_remote_code or None,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enable_chunked_prefill": self.enable_chunked_prefill or None,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs


def _release(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a version string such as "0.7.4.dev181+gf35f8e22"; None if it has none."""
    match = re.match(r"v?(\d+)\.(\d+)", version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


# "Using Triton MLA backend." (0.7.x), "Using FlashMLA backend on V1 engine." (0.8-0.10),
# "Using AttentionBackendEnum.FLASHMLA backend." and "Using FLASHMLA attention backend out of potential
# backends: [...]." (vllm/platforms/cuda.py, later releases); a worker's prefix may come before it
_ATTENTION_LINE = re.compile(r"\bUsing (?P<name>[\w.\- ]+?) (?:attention )?backend"
                             r"(?: on V1 engine)?(?: out of potential backends: .*)?\.?\s*$", re.MULTILINE)
_NOT_ATTENTION = {"TRANSFORMERS"}  # "Using Transformers backend.": the model's implementation, not its attention


def logged_attention_backend(log: str) -> str | None:
    """The attention backend named by the first such line in vLLM's log, as vLLM wrote it; None if none."""
    for match in _ATTENTION_LINE.finditer(log):
        name = re.sub(r"^(?:AttentionBackendEnum|_Backend)\.", "", match.group("name").strip())
        if _attention_key(name) not in _NOT_ATTENTION:
            return name
    return None


def _attention_key(name: str) -> str:
    """One spelling for the enum name and the log's words: FLASH_ATTN and "Flash Attention" -> FLASH,
    TRITON_MLA and "Triton MLA" -> TRITONMLA, ROCM_FLASH and "ROCmFlashAttention" -> ROCMFLASH."""
    key = re.sub(r"[^A-Z0-9]", "", name.upper())
    key = re.sub(r"(?:VLLMV1|V1)$", "", key).replace("ATTENTION", "ATTN")
    return key.removesuffix("ATTN") or key

"""TensorRT-LLM's OpenAI server: ``trtllm-serve MODEL --backend pytorch --tp_size N --ep_size E ...``.

Flags are the click options of ``trtllm-serve`` (``tensorrt_llm/commands/serve.py``; docs:
"trtllm-serve"): ``--backend``, ``--tp_size``, ``--pp_size``, ``--ep_size``,
``--max_batch_size``, ``--max_num_tokens``, ``--max_seq_len``,
``--kv_cache_free_gpu_memory_fraction``, ``--trust_remote_code``, ``--extra_llm_api_options``
(a YAML file), ``--host``, ``--port``. The first argument that is not a subcommand makes
``trtllm-serve`` run ``serve``. Endpoints: ``/health``, ``/version``, ``/v1/models``; there is
no cache-reset endpoint. ``/v1/models`` lists MODEL as given, so a local checkpoint directory
(the seed's ``deepseek``) is also the model name requests carry.

Request dialect: ``CompletionRequest`` takes token-id prompts, ``ignore_eos``, ``min_tokens``
and ``stream_options.continuous_usage_stats`` (``tensorrt_llm/serve/openai_protocol.py``) and
rejects unknown fields (``extra="forbid"``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from raybench.backends.base import (
    BackendKind,
    Endpoints,
    ProcessBackend,
    check_fraction,
    check_positive,
    enum_value,
    flag_value,
)


class TRTLLMRuntime(str, enum.Enum):
    PYTORCH = "pytorch"  # the PyTorch flow TensorRT-LLM recommends (the seed's online runs)
    TENSORRT = "tensorrt"  # a prebuilt TensorRT engine directory as MODEL


@dataclass(frozen=True, kw_only=True)
class TRTLLMBackend(ProcessBackend):
    kind: ClassVar[BackendKind] = BackendKind.TRTLLM
    endpoints: ClassVar[Endpoints] = Endpoints(version=("/version",))
    reserved_flags: ClassVar[dict[str, str]] = {
        "--host": "the node's address", "--port": "a free port", "--tp_size": "use tp=",
        "--tensor_parallel_size": "use tp=", "--ep_size": "use ep=", "--pp_size": "use pp=",
        "--backend": "use runtime=",
    }

    name: str = "trtllm"
    executable: str = "trtllm-serve"
    runtime: TRTLLMRuntime = TRTLLMRuntime.PYTORCH
    tp: int = 1
    pp: int = 1
    ep: int | None = None
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    kv_cache_free_gpu_memory_fraction: float | None = None
    trust_remote_code: bool = False
    extra_llm_api_options: str | None = None  # path of a YAML file on the GPU node

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "runtime", enum_value("runtime", TRTLLMRuntime, self.runtime))
        check_positive("tp", self.tp)
        check_positive("pp", self.pp)
        for name in ("ep", "max_batch_size", "max_num_tokens", "max_seq_len"):
            check_positive(name, getattr(self, name), optional=True)
        check_fraction("kv_cache_free_gpu_memory_fraction", self.kv_cache_free_gpu_memory_fraction)

    def default_num_gpus(self) -> int:
        return self.tp * self.pp

    def served_model(self, model: str) -> str:
        return self.load_path(model)

    def server_argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        argv = [self.executable, self.load_path(model), "--backend", self.runtime.value]
        argv += ["--tp_size", str(self.tp), "--pp_size", str(self.pp)]
        argv += flag_value("--ep_size", self.ep)
        argv += flag_value("--max_batch_size", self.max_batch_size)
        argv += flag_value("--max_num_tokens", self.max_num_tokens)
        argv += flag_value("--max_seq_len", self.max_seq_len)
        argv += flag_value("--kv_cache_free_gpu_memory_fraction", self.kv_cache_free_gpu_memory_fraction)
        argv += flag_value("--trust_remote_code", self.trust_remote_code)
        argv += flag_value("--extra_llm_api_options", self.extra_llm_api_options)
        return argv + ["--host", host, "--port", str(port), *self.extra_args]

    def engine_kwargs(self, model: str) -> dict[str, object]:
        """``tensorrt_llm.LLM(**kwargs)`` for offline engine mode (LlmArgs field names)."""
        kwargs: dict[str, object] = {"model": self.load_path(model), "tensor_parallel_size": self.tp}
        optional = {
            "pipeline_parallel_size": self.pp if self.pp > 1 else None,
            "moe_expert_parallel_size": self.ep,
            "max_batch_size": self.max_batch_size,
            "max_num_tokens": self.max_num_tokens,
            "max_seq_len": self.max_seq_len,
            "trust_remote_code": self.trust_remote_code or None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

"""TensorRT-LLM's OpenAI server: ``trtllm-serve MODEL --backend pytorch --tp_size N --ep_size E ...``.

Flags are the click options of ``trtllm-serve`` (``tensorrt_llm/commands/serve.py``; docs:
"trtllm-serve"): ``--backend``, ``--tp_size``, ``--pp_size``, ``--ep_size``,
``--max_batch_size``, ``--max_num_tokens``, ``--max_seq_len``,
``--kv_cache_free_gpu_memory_fraction``, ``--trust_remote_code``, ``--extra_llm_api_options``
(a YAML file), ``--host``, ``--port``. The first argument that is not a subcommand makes
``trtllm-serve`` run ``serve``. Endpoints: ``/health``, ``/version``, ``/v1/models``; there is
no cache-reset endpoint.

Model name: ``trtllm-serve`` has no rename flag. Its ``OpenAIServer`` lists MODEL as given,
unless MODEL is an existing directory on the server's node, which it lists by its last
component (``tensorrt_llm/serve/openai_server.py``: ``if model_dir.exists() and
model_dir.is_dir(): self.model = model_dir.name``). The driver cannot always look at that
node's disk, so readiness accepts either name and requests carry the one ``/v1/models`` lists
(``served_model_names``, ``with_listed_model``). The seed's ``deepseek`` is both.

``--backend``: releases up to the seed's build (9b931c0f, "0.17.post1.dev") take only
``--backend pytorch`` and serve a TensorRT engine when it is left out; later ones default to
PyTorch and take ``--backend trt`` (1.x: ``tensorrt``, with ``trt`` as an alias). No spelling
of the engine flow works on both, so ``engine_flag`` says which to write (``TRTLLMEngineFlag``).

Request dialect: ``CompletionRequest`` takes token-id prompts, ``ignore_eos``, ``min_tokens``
and ``stream_options.continuous_usage_stats`` (``tensorrt_llm/serve/openai_protocol.py``) and
rejects unknown fields (``extra="forbid"``).
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
from dataclasses import dataclass, field
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


class TRTLLMEngineFlag(str, enum.Enum):
    """How the argv asks ``trtllm-serve`` for the TensorRT engine flow (``runtime=tensorrt``)."""

    OMIT = "omit"  # no --backend: releases whose --backend takes only pytorch (the seed's 0.17-era build)
    TRT = "trt"  # --backend trt: releases that default to pytorch (1.x reads trt as an alias of tensorrt)


@dataclass(frozen=True, kw_only=True)
class TRTLLMBackend(ProcessBackend):
    kind: ClassVar[BackendKind] = BackendKind.TRTLLM
    endpoints: ClassVar[Endpoints] = Endpoints(version=("/version",))
    reserved_flags: ClassVar[dict[str, str]] = {
        "--host": "the node's address", "--port": "a free port", "--tp_size": "use tp=",
        "--tensor_parallel_size": "use tp=", "--ep_size": "use ep=", "--pp_size": "use pp=",
        "--backend": "use runtime= and engine_flag=",
    }

    name: str = "trtllm"
    executable: str = "trtllm-serve"
    runtime: TRTLLMRuntime = TRTLLMRuntime.PYTORCH
    engine_flag: TRTLLMEngineFlag = TRTLLMEngineFlag.OMIT  # right for the seed's build; "trt" on releases after it
    tp: int = 1
    pp: int = 1
    ep: int | None = None
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    kv_cache_free_gpu_memory_fraction: float | None = None
    trust_remote_code: bool = False
    extra_llm_api_options: str | None = None  # path of a YAML file on the GPU node
    # the name the running server listed in /v1/models (with_listed_model); not an option
    listed_model: str | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "runtime", enum_value("runtime", TRTLLMRuntime, self.runtime))
        object.__setattr__(self, "engine_flag", enum_value("engine_flag", TRTLLMEngineFlag, self.engine_flag))
        check_positive("tp", self.tp)
        check_positive("pp", self.pp)
        for name in ("ep", "max_batch_size", "max_num_tokens", "max_seq_len"):
            check_positive(name, getattr(self, name), optional=True)
        check_fraction("kv_cache_free_gpu_memory_fraction", self.kv_cache_free_gpu_memory_fraction)

    def default_num_gpus(self) -> int:
        return self.tp * self.pp

    def served_model(self, model: str) -> str:
        return self.listed_model or self.load_path(model)

    def served_model_names(self, model: str) -> tuple[str, ...]:
        if self.listed_model is not None:
            return (self.listed_model,)
        path = self.load_path(model)
        name = posixpath.basename(path.rstrip("/"))
        return (path,) if name in ("", path) else (path, name)

    def with_listed_model(self, name: str) -> TRTLLMBackend:
        pinned = dataclasses.replace(self)
        object.__setattr__(pinned, "listed_model", name)
        return pinned

    def _backend_flag(self) -> list[str]:
        """``--backend ...`` for this runtime, as ``engine_flag`` says the release spells it."""
        if self.runtime is TRTLLMRuntime.PYTORCH:
            return ["--backend", "pytorch"]  # every release takes it
        return [] if self.engine_flag is TRTLLMEngineFlag.OMIT else ["--backend", "trt"]

    def server_argv(self, *, model: str, host: str, port: int, python: str) -> list[str]:
        argv = [self.executable, self.load_path(model), *self._backend_flag()]
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
        """``LLM(**kwargs)`` for offline engine mode, in LlmArgs field names, with the server's settings.

        ``kv_cache_config`` is a plain dict here (trtllm-serve turns --kv_cache_free_gpu_memory_fraction
        into ``KvCacheConfig(free_gpu_memory_fraction=...)``; the engine actor builds that class),
        and ``extra_llm_api_options`` stays a path: the YAML lives on the GPU node, where the actor
        reads it over these arguments, as trtllm-serve does. Which ``LLM`` class runs ``runtime`` is
        the engine actor's choice too (``trtllm_llm_class``): it depends on the installed release.
        """
        kwargs: dict[str, object] = {"model": self.load_path(model), "tensor_parallel_size": self.tp}
        optional = {
            "pipeline_parallel_size": self.pp if self.pp > 1 else None,
            "moe_expert_parallel_size": self.ep,
            "max_batch_size": self.max_batch_size,
            "max_num_tokens": self.max_num_tokens,
            "max_seq_len": self.max_seq_len,
            "trust_remote_code": self.trust_remote_code or None,
            "kv_cache_config": None if self.kv_cache_free_gpu_memory_fraction is None else {
                "free_gpu_memory_fraction": self.kv_cache_free_gpu_memory_fraction},
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

"""Offline engine mode: one batched generate on the backend's in-process engine, on a GPU node.

This is what the seed's ``benchmark_throughput.py`` scripts did: build ``vllm.LLM`` /
``sglang.Engine`` / TensorRT-LLM's ``LLM`` (the class of the backend's runtime) with the
server's settings, then time exactly one ``generate`` of B token-id prompts whose output
lengths are forced (``ignore_eos``), and count tokens from what the engine returned. Building
the engine is not timed. The simulator's ``OfflineEngine`` meets the same interface, in
simulated time.

The ``EngineActor`` asks Ray for the same GPUs and resources as the backend's server, so it
can only run while that server is down; the runner runs a backend's engine cells after its
server cells. A package missing on the GPU node is a ``BackendError`` naming package and node. A vLLM whose
``executable`` belongs to another Python environment runs in a child process under that
environment's interpreter (``engine_process.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray

from raybench.backends.base import BackendKind, ProcessBackend
from raybench.backends.engine_process import engine_python, run_engine_script
from raybench.errors import BackendError
from raybench.priority import run_at_normal_priority
from raybench.store.schema import RequestStatus, requests_from_columns
from raybench.workloads.base import RequestSpec

# Sampling as benchmark_throughput.py sets it: temperature 1, top_p 1, output length forced.
TEMPERATURE = 1.0
TOP_P = 1.0
_PACKAGES = {BackendKind.VLLM: "vllm", BackendKind.SGLANG: "sglang", BackendKind.TRTLLM: "tensorrt_llm"}
_PIP_NAMES = {"vllm": "vllm", "sglang": "sglang[all]", "tensorrt_llm": "tensorrt-llm"}


@dataclass(frozen=True, kw_only=True)
class EngineResult:
    elapsed_s: float
    prompt_tokens: list[int]
    output_tokens: list[int]
    node: str

    def requests_table(self, cell_id: str, specs: Sequence[RequestSpec]) -> pa.Table:
        """One row per prompt; times run from 0 (the generate call) to its elapsed time."""
        n = len(specs)
        end_ns = int(self.elapsed_s * 1e9)
        return requests_from_columns(
            {
                "cell_id": [cell_id] * n,
                "request_id": [s.request_id for s in specs],
                "actor": ["engine"] * n,
                "node": [self.node] * n,
                "prompt_tokens": self.prompt_tokens,
                "server_prompt_tokens": self.prompt_tokens,
                "max_tokens": [s.max_tokens for s in specs],
                "output_tokens": self.output_tokens,
                "cached_tokens": [None] * n,
                "t_scheduled_ns": [0] * n,
                "t_sent_ns": [0] * n,
                "t_first_ns": [None] * n,
                "t_done_ns": [end_ns] * n,
                "status": [RequestStatus.OK.value] * n,
                "http_status": [None] * n,
                "error": [None] * n,
                "session": [s.session for s in specs],
                "turn": [s.turn for s in specs],
            }
        )


Generated = tuple[float, list[int], list[int]]  # elapsed_s, prompt tokens, output tokens


def import_engine_package(name: str, node: str) -> Any:
    """The engine's package, or a BackendError that says which package is missing on which node."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise BackendError(
            f"offline engine mode needs the Python package {name!r} on node {node} "
            f"(interpreter {sys.executable}), and it cannot be imported: {err}. "
            f"Install it there (pip install {_PIP_NAMES.get(name, name)}), or use "
            "Offline(method=OfflineMethod.BURST) to send the batch to the server instead"
        ) from err


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def generate_vllm(backend: Any, model: str, prompts: list[list[int]], max_tokens: list[int], node: str) -> Generated:
    python = engine_python(backend.executable)
    if python is not None:  # vLLM lives in an environment of its own: run it there
        job = {"engine": "vllm", "engine_kwargs": backend.engine_kwargs(model), "prompts": prompts,
               "max_tokens": max_tokens, "temperature": TEMPERATURE, "top_p": TOP_P}
        out = run_engine_script(python, job, node=node)
        return out["elapsed_s"], out["prompt_tokens"], out["output_tokens"]
    vllm = import_engine_package("vllm", node)
    llm = vllm.LLM(**backend.engine_kwargs(model))
    params = [vllm.SamplingParams(n=1, temperature=TEMPERATURE, top_p=TOP_P, ignore_eos=True, max_tokens=m)
              for m in max_tokens]
    inputs = [{"prompt_token_ids": ids} for ids in prompts]
    elapsed, outputs = _timed(lambda: llm.generate(inputs, sampling_params=params, use_tqdm=False))
    return elapsed, [len(o.prompt_token_ids) for o in outputs], [len(o.outputs[0].token_ids) for o in outputs]


def generate_sglang(backend: Any, model: str, prompts: list[list[int]], max_tokens: list[int], node: str) -> Generated:
    sglang = import_engine_package("sglang", node)
    engine = sglang.Engine(**backend.engine_kwargs(model))
    try:
        params = [{"temperature": TEMPERATURE, "top_p": TOP_P, "max_new_tokens": m, "ignore_eos": True}
                  for m in max_tokens]
        elapsed, outputs = _timed(lambda: engine.generate(input_ids=prompts, sampling_params=params))
    finally:
        engine.shutdown()
    meta = [o["meta_info"] for o in outputs]
    return elapsed, [m["prompt_tokens"] for m in meta], [m["completion_tokens"] for m in meta]


# Where each release keeps the LLM class of each runtime. 1.x moved the TensorRT engine flow to
# tensorrt_llm._tensorrt_engine and made tensorrt_llm.LLM the PyTorch flow (its _torch.LLM only
# raises, "deprecated"); before that tensorrt_llm.LLM was the engine flow and _torch.LLM (the
# seed-era serve.py's PyTorchLLM) the PyTorch one.
_TRTLLM_LLM_CLASSES = {
    "1.x": {"pytorch": "tensorrt_llm", "tensorrt": "tensorrt_llm._tensorrt_engine"},
    "before 1.0": {"pytorch": "tensorrt_llm._torch", "tensorrt": "tensorrt_llm"},
}


def trtllm_llm_class(trtllm: Any, runtime: str, node: str) -> Any:
    """The ``LLM`` class that runs ``runtime`` ("pytorch" or "tensorrt") in the installed release."""
    try:
        split = importlib.util.find_spec("tensorrt_llm._tensorrt_engine") is not None
    except (ImportError, ValueError):  # a tensorrt_llm that is not a package
        split = False
    layout = "1.x" if split else "before 1.0"
    module_name = _TRTLLM_LLM_CLASSES[layout][runtime]
    try:
        return importlib.import_module(module_name).LLM
    except (ImportError, AttributeError) as err:
        raise BackendError(
            f"offline engine mode: TensorRT-LLM {getattr(trtllm, '__version__', '(version unknown)')} on node {node} "
            f"has no LLM class for runtime={runtime} ({module_name}.LLM: {err}); install a release that has "
            "that flow, or set runtime= to one it has") from err


def trtllm_llm_kwargs(kwargs: dict[str, Any], extra_llm_api_options: str | None, node: str) -> dict[str, Any]:
    """``kwargs`` as trtllm-serve hands them to the LLM: the KV fraction as a KvCacheConfig, then the YAML over them."""
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("kv_cache_config"), dict):
        kwargs["kv_cache_config"] = importlib.import_module("tensorrt_llm.llmapi").KvCacheConfig(**kwargs["kv_cache_config"])
    if extra_llm_api_options is None:
        return kwargs
    import yaml  # a dependency of tensorrt_llm, whose node this runs on

    try:
        with open(extra_llm_api_options) as f:
            extra = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as err:
        raise BackendError(f"extra_llm_api_options={extra_llm_api_options!r} cannot be read on node {node}: "
                           f"{err}".replace("\n", " ")) from err
    if not isinstance(extra, dict):
        raise BackendError(f"extra_llm_api_options={extra_llm_api_options!r} holds {type(extra).__name__}, "
                           "not a mapping of LLM argument names to values")
    # serve.py's own merge builds the config classes (kv_cache_config, ...) from the YAML's dicts
    update = getattr(importlib.import_module("tensorrt_llm.llmapi.llm_utils"), "update_llm_args_with_extra_dict", None)
    return update(kwargs, extra) if update is not None else {**kwargs, **extra}


def generate_trtllm(backend: Any, model: str, prompts: list[list[int]], max_tokens: list[int], node: str) -> Generated:
    trtllm = import_engine_package("tensorrt_llm", node)
    llm_class = trtllm_llm_class(trtllm, backend.runtime.value, node)
    llm = llm_class(**trtllm_llm_kwargs(backend.engine_kwargs(model), backend.extra_llm_api_options, node))
    try:
        params = [trtllm.SamplingParams(max_tokens=m, ignore_eos=True, temperature=TEMPERATURE, top_p=TOP_P)
                  for m in max_tokens]
        elapsed, outputs = _timed(lambda: llm.generate(prompts, sampling_params=params))
    finally:
        llm.shutdown()
    return elapsed, [len(o.prompt_token_ids) for o in outputs], [len(o.outputs[0].token_ids) for o in outputs]


def generate_sim(backend: Any, model: str, prompts: list[Any], max_tokens: list[int], node: str) -> Generated:
    """The simulator's engine: the elapsed time is simulated, not measured."""
    from raybench.sim.config import SimConfig
    from raybench.sim.offline import OfflineEngine

    config = SimConfig(model=model, timing="engine", gpu=backend.gpu, num_gpus=backend.num_gpus,
                       backend_profile=backend.profile, tokens_per_chunk=backend.tokens_per_chunk,
                       features=getattr(backend, "engine_features", None), profiles=getattr(backend, "profiles", None))
    result = OfflineEngine(config).generate(prompts, max_tokens)  # lengths or ids: it models the lengths
    return result.elapsed_s, result.prompt_tokens, result.output_tokens


GENERATORS: dict[BackendKind, Callable[..., Generated]] = {
    BackendKind.SIM: generate_sim,
    BackendKind.VLLM: generate_vllm,
    BackendKind.SGLANG: generate_sglang,
    BackendKind.TRTLLM: generate_trtllm,
}


class _EngineActor:
    """Builds the engine and runs the batch; returns an EngineResult or the error's message."""

    def __init__(self) -> None:
        run_at_normal_priority()  # the engine's own threads inherit it

    def generate(self, backend: ProcessBackend, model: str, prompts: list[list[int]], max_tokens: list[int]) -> EngineResult | str:
        node = ray.util.get_node_ip_address()
        try:
            elapsed_s, prompt_tokens, output_tokens = GENERATORS[backend.kind](backend, model, prompts, max_tokens, node)
        except BackendError as err:
            return str(err)
        return EngineResult(elapsed_s=elapsed_s, prompt_tokens=list(prompt_tokens), output_tokens=list(output_tokens),
                            node=ray.get_runtime_context().get_node_id())


EngineActor = ray.remote(max_restarts=0)(_EngineActor)


def run_offline_engine(backend: ProcessBackend, *, model: str, specs: Sequence[RequestSpec]) -> EngineResult:
    """One batched generate of ``specs`` on ``backend``'s engine, in an actor with its GPUs."""
    if backend.kind not in GENERATORS:
        raise BackendError(f"{backend.name}: offline engine mode needs an in-process engine; {backend.kind.value} has none")
    if backend.container is not None:
        raise BackendError(f"{backend.name}: offline engine mode imports the engine in a Ray actor and cannot run "
                           "inside a container image; use Offline(method=OfflineMethod.BURST)")
    options = backend.actor_options()
    if backend.kind is BackendKind.SIM:
        prompts: list[Any] = [s.prompt_tokens for s in specs]  # the simulator models lengths only
    else:
        prompts = [s.prompt_token_ids.tolist() for s in specs]
        if backend.server_env():  # e.g. VLLM_ATTENTION_BACKEND: the engine reads it at import
            options["runtime_env"] = {"env_vars": backend.server_env()}
    actor = EngineActor.options(**options).remote()
    try:
        result = ray.get(actor.generate.remote(backend, model, prompts, [s.max_tokens for s in specs]))
    finally:
        ray.kill(actor, no_restart=True)  # frees the GPUs at once: the engine lives in that process
    if isinstance(result, str):
        raise BackendError(result)
    return result

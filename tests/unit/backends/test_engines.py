"""Offline engine mode against fake ``vllm`` / ``sglang`` / ``tensorrt_llm`` modules (their real call shapes).

Each fake records how it was built and called and generates exactly the tokens asked for, so
these tests pin the engine arguments, the forced output lengths and the token counting.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from raybench.backends import SGLangBackend, SimBackend, TRTLLMBackend, VLLMBackend
from raybench.backends.engine_actor import (
    generate_sglang,
    generate_sim,
    generate_trtllm,
    generate_vllm,
    import_engine_package,
)
from raybench.errors import BackendError

MODEL = "deepseek-ai/DeepSeek-R1"
PROMPTS = [[11, 12, 13], [21, 22]]
MAX_TOKENS = [4, 6]


@dataclass
class _Completion:
    token_ids: list[int]


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Completion]


def _fake_module(name, monkeypatch, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_vllm_engine_gets_the_servers_settings_and_forced_lengths(monkeypatch):
    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def generate(self, inputs, sampling_params, use_tqdm):
            calls["inputs"], calls["params"] = inputs, sampling_params
            return [_RequestOutput(i["prompt_token_ids"], [_Completion([0] * p.max_tokens)])
                    for i, p in zip(inputs, sampling_params)]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    _fake_module("vllm", monkeypatch, LLM=LLM, SamplingParams=SamplingParams)
    backend = VLLMBackend(tp=8, trust_remote_code=True, max_model_len=32768, enable_prefix_caching=True)
    elapsed, prompt_tokens, output_tokens = generate_vllm(backend, MODEL, PROMPTS, MAX_TOKENS, "10.0.0.5")
    assert calls["init"] == {"model": MODEL, "tensor_parallel_size": 8, "trust_remote_code": True,
                             "enable_prefix_caching": True, "max_model_len": 32768}
    assert calls["inputs"] == [{"prompt_token_ids": p} for p in PROMPTS]
    assert [(p.ignore_eos, p.max_tokens, p.temperature, p.top_p, p.n) for p in calls["params"]] == [
        (True, 4, 1.0, 1.0, 1), (True, 6, 1.0, 1.0, 1)]
    assert (prompt_tokens, output_tokens) == ([3, 2], [4, 6]) and elapsed >= 0


def test_sglang_engine_counts_from_meta_info_and_shuts_down(monkeypatch):
    calls = {}

    class Engine:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def generate(self, input_ids, sampling_params):
            calls["params"] = sampling_params
            return [{"meta_info": {"prompt_tokens": len(i), "completion_tokens": p["max_new_tokens"]}}
                    for i, p in zip(input_ids, sampling_params)]

        def shutdown(self):
            calls["shutdown"] = True

    _fake_module("sglang", monkeypatch, Engine=Engine)
    backend = SGLangBackend(tp=8, enable_dp_attention=True, trust_remote_code=True)
    _, prompt_tokens, output_tokens = generate_sglang(backend, MODEL, PROMPTS, MAX_TOKENS, "n")
    assert calls["init"] == {"model_path": MODEL, "tp_size": 8, "enable_dp_attention": True, "trust_remote_code": True}
    assert calls["params"][0] == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4, "ignore_eos": True}
    assert (prompt_tokens, output_tokens, calls["shutdown"]) == ([3, 2], [4, 6], True)


TRTLLM_RELEASES = Path(__file__).resolve().parents[2] / "fakes" / "trtllm_releases"


@pytest.fixture
def trtllm_release(monkeypatch):
    """Puts one fake tensorrt_llm release (tests/fakes/trtllm_releases) on sys.path; returns what it built."""
    monkeypatch.syspath_prepend(str(TRTLLM_RELEASES))
    import fake_trtllm_core

    def install(release):
        for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.syspath_prepend(str(TRTLLM_RELEASES / release))
        fake_trtllm_core.BUILT.clear()
        return fake_trtllm_core

    yield install
    for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
        del sys.modules[name]


@pytest.mark.parametrize("release", ["before_1_0", "v1"])
@pytest.mark.parametrize("runtime", ["pytorch", "tensorrt"])
def test_trtllm_engine_runs_the_runtimes_flow_with_the_servers_settings(trtllm_release, tmp_path, release, runtime):
    core = trtllm_release(release)
    extra = tmp_path / "extra.yaml"
    extra.write_text("enable_attention_dp: true\nmax_batch_size: 256\n")
    backend = TRTLLMBackend(tp=8, ep=4, max_batch_size=512, max_num_tokens=16384, max_seq_len=16384, runtime=runtime,
                            kv_cache_free_gpu_memory_fraction=0.8, extra_llm_api_options=str(extra))
    _, prompt_tokens, output_tokens = generate_trtllm(backend, MODEL, PROMPTS, MAX_TOKENS, "n")
    assert (prompt_tokens, output_tokens) == ([3, 2], [4, 6])
    [(flow, kwargs)] = core.BUILT
    assert flow == runtime
    # as trtllm-serve: --kv_cache_free_gpu_memory_fraction becomes a KvCacheConfig, the YAML's keys win
    assert kwargs == {"model": MODEL, "tensor_parallel_size": 8, "moe_expert_parallel_size": 4,
                      "max_batch_size": 256, "max_num_tokens": 16384, "max_seq_len": 16384,
                      "kv_cache_config": core.KvCacheConfig(free_gpu_memory_fraction=0.8), "enable_attention_dp": True}


def test_trtllm_engine_without_the_runtimes_flow_names_runtime_and_release(trtllm_release, monkeypatch):
    trtllm_release("before_1_0")
    monkeypatch.setitem(sys.modules, "tensorrt_llm._torch", None)  # a release from before the PyTorch flow
    with pytest.raises(BackendError) as err:
        generate_trtllm(TRTLLMBackend(), MODEL, PROMPTS, MAX_TOKENS, "10.0.0.5")
    message = str(err.value)
    assert "TensorRT-LLM 0.17.0.post1 on node 10.0.0.5 has no LLM class for runtime=pytorch" in message
    assert "\n" not in message


def test_trtllm_engine_with_an_unreadable_options_file_says_which(trtllm_release, tmp_path):
    trtllm_release("v1")
    backend = TRTLLMBackend(extra_llm_api_options=str(tmp_path / "missing.yaml"))
    with pytest.raises(BackendError, match=r"extra_llm_api_options='.*missing\.yaml' cannot be read on node n: "):
        generate_trtllm(backend, MODEL, PROMPTS, MAX_TOKENS, "n")


def test_the_simulators_engine_meets_the_same_interface():
    elapsed, prompt_tokens, output_tokens = generate_sim(SimBackend(), MODEL, [3200, 3200], [800, 800], "n")
    assert (prompt_tokens, output_tokens) == ([3200, 3200], [800, 800]) and elapsed > 0


def test_a_missing_engine_package_names_the_package_and_the_node(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import raises ImportError
    with pytest.raises(BackendError, match=r"needs the Python package 'vllm' on node 10\.0\.0\.5 .*pip install vllm"):
        import_engine_package("vllm", "10.0.0.5")

"""Offline engine mode against fake ``vllm`` / ``sglang`` / ``tensorrt_llm`` modules (their real call shapes).

Each fake records how it was built and called and generates exactly the tokens asked for, so
these tests pin the engine arguments, the forced output lengths and the token counting.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

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


def test_trtllm_engine(monkeypatch):
    calls = {}

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def generate(self, prompts, sampling_params):
            return [_RequestOutput(p, [_Completion([0] * s.max_tokens)]) for p, s in zip(prompts, sampling_params)]

        def shutdown(self):
            calls["shutdown"] = True

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    _fake_module("tensorrt_llm", monkeypatch, LLM=LLM, SamplingParams=SamplingParams)
    backend = TRTLLMBackend(tp=8, ep=4, max_batch_size=512, max_num_tokens=16384, max_seq_len=16384)
    _, prompt_tokens, output_tokens = generate_trtllm(backend, MODEL, PROMPTS, MAX_TOKENS, "n")
    assert calls["init"] == {"model": MODEL, "tensor_parallel_size": 8, "moe_expert_parallel_size": 4,
                             "max_batch_size": 512, "max_num_tokens": 16384, "max_seq_len": 16384}
    assert (prompt_tokens, output_tokens, calls["shutdown"]) == ([3, 2], [4, 6], True)


def test_the_simulators_engine_meets_the_same_interface():
    elapsed, prompt_tokens, output_tokens = generate_sim(SimBackend(), MODEL, [3200, 3200], [800, 800], "n")
    assert (prompt_tokens, output_tokens) == ([3200, 3200], [800, 800]) and elapsed > 0


def test_a_missing_engine_package_names_the_package_and_the_node(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import raises ImportError
    with pytest.raises(BackendError, match=r"needs the Python package 'vllm' on node 10\.0\.0\.5 .*pip install vllm"):
        import_engine_package("vllm", "10.0.0.5")

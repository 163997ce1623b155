"""What the fake tensorrt_llm packages share: an LLM that records how it was built, and the config classes."""

from __future__ import annotations

from dataclasses import dataclass

BUILT: list[tuple[str, dict]] = []  # (flow, kwargs) of every LLM built; tests clear it


@dataclass
class KvCacheConfig:
    free_gpu_memory_fraction: float | None = None
    enable_block_reuse: bool = True


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@dataclass
class _Completion:
    token_ids: list[int]


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Completion]


class RecordingLLM:
    flow = "?"

    def __init__(self, **kwargs):
        BUILT.append((self.flow, kwargs))

    def generate(self, prompts, sampling_params):
        return [_RequestOutput(p, [_Completion([0] * s.max_tokens)]) for p, s in zip(prompts, sampling_params)]

    def shutdown(self):
        pass


def update_llm_args_with_extra_dict(llm_args, llm_args_dict, extra_llm_api_options=None):
    """As tensorrt_llm/llmapi/llm_utils.py: dicts become config classes, then the YAML's keys win."""
    llm_args_dict = dict(llm_args_dict)
    if "kv_cache_config" in llm_args_dict:
        llm_args_dict["kv_cache_config"] = KvCacheConfig(**llm_args_dict["kv_cache_config"])
    return {**llm_args, **llm_args_dict}

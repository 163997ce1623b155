from fake_trtllm_core import SamplingParams

from tensorrt_llm.llmapi import LLM

__version__ = "0.17.0.post1"
__all__ = ["LLM", "SamplingParams"]

from fake_trtllm_core import SamplingParams

from tensorrt_llm.llmapi import LLM

__version__ = "1.0.0"
__all__ = ["LLM", "SamplingParams"]

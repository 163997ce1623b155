from fake_trtllm_core import KvCacheConfig

from tensorrt_llm.llmapi.llm import LLM

__all__ = ["LLM", "KvCacheConfig"]

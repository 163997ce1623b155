from tensorrt_llm._torch.llm import LLM

__all__ = ["LLM"]

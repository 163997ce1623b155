from tensorrt_llm.llmapi.llm import LLM as _TorchLLM


class LLM(_TorchLLM):
    def __init__(self, *args, **kwargs):
        raise ImportError("_torch.llm is deprecated, please use `from tensorrt_llm import LLM` directly")

from fake_trtllm_core import RecordingLLM


class LLM(RecordingLLM):
    flow = "pytorch"  # 1.x: class LLM(_TorchLLM)


class _TrtLLM(RecordingLLM):
    flow = "tensorrt"

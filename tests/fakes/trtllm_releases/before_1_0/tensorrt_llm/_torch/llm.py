from fake_trtllm_core import RecordingLLM


class LLM(RecordingLLM):
    flow = "pytorch"  # the real one sets backend="pytorch" over the LLM API's class

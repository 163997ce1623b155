from fake_trtllm_core import RecordingLLM


class LLM(RecordingLLM):
    flow = "tensorrt"  # before 1.0 the LLM API's default is the TensorRT engine

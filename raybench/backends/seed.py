"""The seed benchmark's five servers (DeepSeek-R1, 8 GPUs, TP 8) as raybench backends, with the
second commands of vLLM on H200 (prefix caching; the offline script's engine).

Source: dstackai/benchmarks, branch deepseek-r1-benchmark, ``Deepseek-R1/README.md``, section
"dstack Task" (the seed post links it). Each constant reproduces one task's image, environment,
shared memory and launch flags; raybench adds only ``--host``/``--port`` and writes SGLang's
``--model``/``--tp`` abbreviations in full (``--model-path``/``--tp-size``). Use them as
``dataclasses.replace(SEED_VLLM_H200, placement=Placement(resources={"H200": 8}))`` and so on.

What the tasks did that options cannot say is noted beside each one.
"""

from __future__ import annotations

from raybench.backends.base import Platform
from raybench.backends.container import Container
from raybench.backends.sglang import SGLangBackend
from raybench.backends.trtllm import TRTLLMBackend
from raybench.backends.vllm import VLLMBackend

MODEL = "deepseek-ai/DeepSeek-R1"

# task sg-h200: python3 -m sglang.launch_server --model deepseek-ai/DeepSeek-R1 --tp 8
#   --trust-remote-code --enable-dp-attention; shm_size 32GB. The seed's client flushed the
#   radix cache before every online run. --enable-dp-attention without --dp-size starts only on
#   SGLang releases before sgl-project/sglang#4390 (2025-03-13), which set dp = tp; on a later
#   one give dp=8 (each rank then takes chunked_prefill_size // 8 a step, not // 2).
SEED_SGLANG_H200 = SGLangBackend(
    name="sglang-h200", tp=8, trust_remote_code=True, enable_dp_attention=True, reset_cache=True,
    container=Container(image="lmsysorg/sglang:latest", shm_size="32g"),
)

# task mi300-sglang: HSA_NO_SCRATCH_RECLAIM=1; python3 -m sglang.launch_server
#   --model-path $MODEL_ID --tp 8 --trust-remote-code. The task set no shm_size; raybench
#   shares the host's IPC namespace, as AMD's ROCm container instructions do.
SEED_SGLANG_MI300X = SGLangBackend(
    name="sglang-mi300x", tp=8, trust_remote_code=True, reset_cache=True, platform=Platform.ROCM,
    env={"HSA_NO_SCRATCH_RECLAIM": "1"},
    container=Container(image="rocm/sglang-staging:20250212", ipc_host=True),
)

# task vllm-h200: VLLM_ATTENTION_BACKEND=FLASHMLA; vllm serve deepseek-ai/DeepSeek-R1
#   --trust-remote-code --tensor-parallel-size 8; shm_size 32GB. The task first replaced the
#   image's vLLM 0.7.3 with a nightly wheel (the README reports 0.7.4.dev181+gf35f8e22): build
#   an image with that wheel and put its tag here to match.
#   AS GIVEN, THESE H200 vLLM CONSTANTS DO NOT RUN FLASHMLA. vLLM 0.7.3 has no FLASHMLA backend
#   (vllm/platforms/interface.py, _Backend); it ignores the name (attention/selector.py returns
#   None for it) and runs DeepSeek-R1's MLA on Triton MLA (platforms/cuda.py logs "Using Triton
#   MLA backend."). raybench reads that line once the server is ready: the run's report says
#   WARNING, and servers/<name>.json records the backend under from_log.attention_backend.
SEED_VLLM_H200 = VLLMBackend(
    name="vllm-h200", tp=8, trust_remote_code=True, attention_backend="FLASHMLA",
    container=Container(image="vllm/vllm-openai:v0.7.3", shm_size="32g"),
)

# the same task's prefix-caching command: --enable-prefix-caching ... --enable-chunked-prefill
SEED_VLLM_H200_PREFIX = VLLMBackend(
    name="vllm-h200-prefix", tp=8, trust_remote_code=True, attention_backend="FLASHMLA",
    enable_prefix_caching=True, enable_chunked_prefill=True,
    container=Container(image="vllm/vllm-openai:v0.7.3", shm_size="32g"),
)

# task vllm-mi300: VLLM_FP8_PADDING=0 VLLM_USE_TRITON_FLASH_ATTN=0; vllm serve
#   deepseek-ai/DeepSeek-R1 --tensor-parallel-size 8 --trust-remote-code --max-model-len 32768
#   (no shm_size given: host IPC, as for SGLang on MI300X)
SEED_VLLM_MI300X = VLLMBackend(
    name="vllm-mi300x", tp=8, trust_remote_code=True, max_model_len=32768, platform=Platform.ROCM,
    env={"VLLM_FP8_PADDING": "0", "VLLM_USE_TRITON_FLASH_ATTN": "0"},
    container=Container(image="rocm/vllm-dev:vllm-ds3-staging-0217", ipc_host=True),
)

# task trt-h200: trtllm-serve --backend pytorch --max_batch_size 512 --max_num_tokens 16384
#   --max_seq_len 16384 --tp_size 8 --ep_size 4 --pp_size 1 deepseek, where deepseek is a git
#   clone of the Hugging Face repo (so /v1/models lists "deepseek"); shm_size 32GB. The image
#   was built from NVIDIA/TensorRT-LLM at 9b931c0f6305aefa3660e6fb84a76a42c0eef167 and has no
#   public tag: give container=Container(image=<your build>, ...) or install trtllm-serve on the node.
SEED_TRTLLM_H200 = TRTLLMBackend(
    name="trtllm-h200", model_path="deepseek", tp=8, pp=1, ep=4,
    max_batch_size=512, max_num_tokens=16384, max_seq_len=16384,
)

# the seed's offline rows ran vLLM's benchmarks/benchmark_throughput.py (SGLang's through the same
#   script) with --tensor-parallel-size=8 --max-model-len=32768 (README "Offline Benchmarking
#   Commands"): an engine of its own, whose step budget without chunked prefill is that length
SEED_OFFLINE_MAX_MODEL_LEN = 32768

# that engine on H200, as a server for raybench's offline cells (the MI300X server already has
#   --max-model-len 32768)
SEED_VLLM_H200_OFFLINE = VLLMBackend(
    name="vllm-h200-offline", tp=8, trust_remote_code=True, attention_backend="FLASHMLA",
    max_model_len=SEED_OFFLINE_MAX_MODEL_LEN, container=Container(image="vllm/vllm-openai:v0.7.3", shm_size="32g"),
)

SEED_BACKENDS = (SEED_SGLANG_H200, SEED_SGLANG_MI300X, SEED_VLLM_H200, SEED_VLLM_H200_PREFIX, SEED_VLLM_MI300X,
                 SEED_TRTLLM_H200, SEED_VLLM_H200_OFFLINE)

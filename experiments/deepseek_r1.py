"""The seed benchmark: DeepSeek-R1 on 8 x H200 and 8 x MI300X (dstack, March 2025).

Five servers with the seed's launch settings (raybench/backends/seed.py): SGLang, vLLM and
TensorRT-LLM on H200, SGLang and vLLM on MI300X. The sweeps hold exactly the cells the seed has
results for (../shared/reference/README.md, "Rows that exist"), so every row of its results CSV
matches one cell. Each server lands on a node whose GPUs Ray detects as H200 or MI300X (Ray's own
``accelerator_type`` resource), so a stock Ray cluster of 8-GPU nodes needs no setup.

Run it with:  raybench run experiments/deepseek_r1.py
"""

from raybench.backends.seed import (
    MODEL,
    SEED_SGLANG_H200,
    SEED_SGLANG_MI300X,
    SEED_TRTLLM_H200,
    SEED_VLLM_H200,
    SEED_VLLM_H200_OFFLINE,
    SEED_VLLM_H200_PREFIX,
    SEED_VLLM_MI300X,
)
from raybench.experiment import Experiment, Hardware, Offline, Online

H200 = Hardware(name="H200", count=8)
MI300X = Hardware(name="MI300X", count=8)

SERVERS = (
    (SEED_SGLANG_H200, H200),
    (SEED_VLLM_H200, H200),
    (SEED_VLLM_H200_PREFIX, H200),  # the same task's prefix-caching command, for the shared-prefix cells
    (SEED_VLLM_H200_OFFLINE, H200),  # the offline script's engine: --max-model-len 32768
    (SEED_TRTLLM_H200, H200),
    (SEED_SGLANG_MI300X, MI300X),
    (SEED_VLLM_MI300X, MI300X),
)
RANDOM = ("sglang-h200", "vllm-h200", "trtllm-h200", "sglang-mi300x", "vllm-mi300x")
# the seed has no MI300X-vLLM prefix run (unsupported then) and no TensorRT-LLM one
PREFIX = ("sglang-h200", "vllm-h200-prefix", "sglang-mi300x")
# the offline rows ran benchmark_throughput.py, whose vLLM engine had --max-model-len 32768
OFFLINE = ("sglang-h200", "vllm-h200-offline", "trtllm-h200", "sglang-mi300x", "vllm-mi300x")

# seed: --random-range-ratio 1 (SGLang's meaning: exact lengths) is raybench's 0 (vLLM's meaning)
online = (
    Online(concurrency=(4, 8, 16, 32, 64, 128), input_len=3200, output_len=800, num_prompts=500, only=RANDOM),
    *(Online(concurrency=(128,), input_len=3200, output_len=out, num_prompts=500, only=RANDOM)
      for out in (1600, 3200, 6400)),
    # 10 groups x 50 prompts: a 2000-token shared prefix and a 1200-token question
    Online(concurrency=(32, 64, 128), input_len=3200, output_len=800, num_prompts=500, dataset="prefix",
           num_groups=10, prompts_per_group=50, prefix_len=2000, only=PREFIX),
)

BATCHES = (32, 64, 128, 256, 512, 1024)
# offline TensorRT-LLM in the seed used a TensorRT engine built from the `deepseek` branch, not the
# PyTorch flow raybench runs: compare those cells with care
offline = (
    Offline(batch_sizes=BATCHES, input_len=3200, output_len=800, only=OFFLINE),
    Offline(batch_sizes=(256, 512, 1024), input_len=3200, output_len=1600,
            only=("sglang-h200", "vllm-h200-offline", "trtllm-h200")),
    Offline(batch_sizes=BATCHES, input_len=3200, output_len=1600, only=("sglang-mi300x", "vllm-mi300x")),
    # H200-vLLM has no output-3200 rows in the seed
    Offline(batch_sizes=(256, 512, 1024), input_len=3200, output_len=3200,
            only=("sglang-h200", "trtllm-h200", "sglang-mi300x", "vllm-mi300x")),
)

experiment = Experiment(
    name="deepseek_r1",
    model=MODEL,
    backends=tuple(b for b, _ in SERVERS),
    hardware={b.name: hw for b, hw in SERVERS},
    online=online,
    offline=offline,
    seed=0,
    warmup_requests=1,
)

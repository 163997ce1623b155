"""The plan's time estimate against the clock: a real run of the engine-timing simulator.

The estimate runs the simulator's engine core in virtual time; here the same cell runs for real,
raybench's load generator against the simulator on port 0, and the benchmark duration the
summary reports must land within 15% of the prediction (the per-cell overhead constant aside:
there is no actor start and no warm-up here).
"""

import time

import numpy as np
import polars as pl
import pyarrow as pa

from raybench.analysis.summary import summarize_cell
from raybench.estimate import CELL_OVERHEAD_S, estimate_plan
from raybench.experiment import Experiment, Online, SimBackend
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.loadgen.records import chunks_batch, requests_batch
from raybench.sim import SimConfig, SimServer
from raybench.workloads import RandomWorkload

MODEL = "deepseek-ai/DeepSeek-R1"


async def test_estimate_matches_a_run_of_the_engine_simulator():
    # 20 requests, 8 slots: 2.5 waves; 8 x 1200 prompt tokens overflow one 8192-token step, so
    # the requests fall out of step and the closed loop refills slots one by one (~6 s)
    backend = SimBackend(name="sim", timing="engine", gpu="H200", num_gpus=8, profile="vllm")
    sweep = Online(concurrency=(8,), input_len=1200, output_len=32, num_prompts=20)
    experiment = Experiment(name="estimate-check", model=MODEL, backends=(backend,), online=(sweep,))
    (cell,) = experiment.cells()
    predicted_s = estimate_plan(experiment, [cell]).cell_seconds(cell.id) - CELL_OVERHEAD_S

    config = SimConfig(model=MODEL, timing="engine", gpu=backend.gpu, num_gpus=backend.num_gpus,
                       backend_profile=backend.profile, tokens_per_chunk=backend.tokens_per_chunk)
    n = cell.num_prompts
    async with SimServer(config) as server:
        client = ClientConfig(base_url=server.url, model=MODEL)
        specs = RandomWorkload(num_prompts=n, input_len=cell.input_len, output_len=cell.output_len).build(range(n))
        gen = LoadGenerator(cell_id=cell.id, client=client, specs=specs, arrivals_s=np.zeros(n),
                            concurrency=cell.concurrency)
        await gen.connect()
        await gen.run(time.perf_counter_ns())
        chunks, requests = gen.drain()
    requests_df = pl.from_arrow(pa.Table.from_batches([requests_batch(requests, cell.id, "a", "n", 0)]))
    chunks_df = pl.from_arrow(pa.Table.from_batches([chunks_batch(chunks, cell.id, 0)]))
    summary = summarize_cell(requests_df, chunks_df, target_concurrency=cell.concurrency)

    assert summary["completed"] == n and summary["total_output_tokens"] == n * cell.output_len
    ratio = summary["duration_s"] / predicted_s
    print(f"measured {summary['duration_s']:.3f} s, predicted {predicted_s:.3f} s, ratio {ratio:.3f}")
    assert 0.85 < ratio < 1.15, (summary["duration_s"], predicted_s)

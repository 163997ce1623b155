"""The generator's progress snapshot counts tokens as they stream, not only when requests end."""

import asyncio
import time

import numpy as np

from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.sim import SimConfig, SimServer
from raybench.workloads import RandomWorkload


async def test_progress_counts_tokens_of_requests_still_in_flight():
    # 4 requests of 40 tokens at 20 ms each: about 0.9 s, nothing finishes before 0.85 s
    async with SimServer(SimConfig(timing="fixed", ttft_ms=50, itl_ms=20)) as server:
        client = ClientConfig(base_url=server.url, model="deepseek-ai/DeepSeek-R1")
        specs = RandomWorkload(num_prompts=4, input_len=8, output_len=40).build(range(4))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(4), concurrency=4)
        await gen.connect()
        run = asyncio.create_task(gen.run(time.perf_counter_ns()))
        await asyncio.sleep(0.5)
        mid = gen.progress()
        await run
        end = gen.progress()
    assert mid.done == 0 and mid.in_flight == 4
    assert 4 * 10 <= mid.output_tokens <= 4 * 30  # ~ (500 - 50) / 20 tokens each so far
    assert 0 <= mid.loop_lag_ms < 100 and mid.ttft_ms_counts == ()
    assert (end.done, end.in_flight, end.output_tokens) == (4, 0, 160)

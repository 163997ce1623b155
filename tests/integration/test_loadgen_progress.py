"""The generator's progress snapshot counts tokens as they stream, not only when requests end."""

import asyncio
import time

import numpy as np

from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.sim import FaultSpec, SimConfig, SimServer
from raybench.workloads import RandomWorkload


async def test_progress_counts_tokens_of_requests_still_in_flight(loop_stalls):
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
    assert 0 <= mid.loop_lag_ms < 100 + loop_stalls.max_ms and mid.ttft_ms_counts == ()
    assert mid.longest_silence_ms < 100 + loop_stalls.max_ms  # every stream had a token within an ITL or so
    assert (end.done, end.in_flight, end.output_tokens) == (4, 0, 160)


async def test_progress_shows_how_long_a_stalled_request_has_had_no_answer():
    # every request stops after 2 events and keeps its connection open (a hung server)
    config = SimConfig(timing="fixed", ttft_ms=20, itl_ms=10, faults=(FaultSpec(kind="stall", after_chunks=2),))
    async with SimServer(config) as server:
        client = ClientConfig(base_url=server.url, model="deepseek-ai/DeepSeek-R1", request_timeout_s=1.5)
        specs = RandomWorkload(num_prompts=2, input_len=8, output_len=40).build(range(2))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(2), concurrency=2)
        await gen.connect()
        run = asyncio.create_task(gen.run(time.perf_counter_ns()))
        await asyncio.sleep(0.2)
        early = gen.progress()
        await asyncio.sleep(0.8)
        late = gen.progress()
        await run
        end = gen.progress()
    assert early.in_flight == late.in_flight == 2
    # the last byte came about 30 ms in: the silence grows with the wall clock, about 0.8 s between the two
    assert late.longest_silence_ms - early.longest_silence_ms > 700
    assert late.longest_silence_ms >= 900
    assert end.in_flight == 0 and end.longest_silence_ms == 0.0  # timed out: nothing left to wait for

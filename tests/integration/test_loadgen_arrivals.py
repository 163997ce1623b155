"""Requests leave at their arrival times; a full concurrency cap shows up as client queue time."""

import asyncio
import time

import numpy as np
import pyarrow as pa

from raybench.loadgen.arrivals import ArrivalProcess
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.loadgen.records import requests_batch
from raybench.sim import SimConfig, SimServer
from raybench.workloads import RandomWorkload

MODEL = "deepseek-ai/DeepSeek-R1"


async def run(sim: SimConfig, arrivals_s: np.ndarray, concurrency: int, *, block_loop_at_s: float | None = None):
    n = len(arrivals_s)
    async with SimServer(sim) as server:
        client = ClientConfig(base_url=server.url, model=MODEL)
        specs = RandomWorkload(num_prompts=n, input_len=8, output_len=4).build(range(n))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=arrivals_s, concurrency=concurrency)
        await gen.connect()
        t_start = time.perf_counter_ns() + 20_000_000
        if block_loop_at_s is not None:
            # the client's own loop stalls for 60 ms: the sends due meanwhile leave late
            asyncio.get_running_loop().call_later(0.02 + block_loop_at_s, time.sleep, 0.06)
        await gen.run(t_start)
        _, requests = gen.drain()
    rows = pa.Table.from_batches([requests_batch(requests, "c", "a", "n", 0)]).to_pylist()
    return t_start, sorted(rows, key=lambda r: r["request_id"])


async def test_poisson_arrivals_are_kept_when_slots_are_free(loop_stalls):
    arrivals = ArrivalProcess(rate_per_s=50.0, burstiness=1.0, seed=3).offsets_s(30)
    t_start, rows = await run(SimConfig(timing="zero"), arrivals, concurrency=30)
    scheduled_s = np.array([(r["t_scheduled_ns"] - t_start) / 1e9 for r in rows])
    np.testing.assert_allclose(scheduled_s, arrivals, atol=1e-6)
    lateness_ms = np.array([(r["t_sent_ns"] - r["t_scheduled_ns"]) / 1e6 for r in rows])
    assert (lateness_ms >= 0).all()
    # each request leaves on time but for the stalls of the loop it shares with the simulator: the
    # loop's timers wake up to 1 ms late (epoll waits whole milliseconds), a stall shorter than the
    # meter's threshold goes unrecorded, and the send itself takes a fraction of a millisecond
    on_time_ms = 1.0 + loop_stalls.stall_ns / 1e6 + 0.5
    allowed_ms = on_time_ms + np.array([loop_stalls.excused_ms(r["t_scheduled_ns"]) for r in rows])
    assert (lateness_ms < allowed_ms).all(), (lateness_ms, allowed_ms)
    assert all(r["status"] == "ok" for r in rows)
    # every slot was free, so the whole of t_sent - t_scheduled is lateness
    np.testing.assert_array_equal([r["send_lateness_ns"] / 1e6 for r in rows], lateness_ms)


async def test_sends_due_while_the_client_loop_stalls_are_measured_late(loop_stalls):
    arrivals = np.arange(1, 41) * 0.005  # one request every 5 ms for 200 ms
    _, rows = await run(SimConfig(timing="zero"), arrivals, concurrency=40, block_loop_at_s=0.05)
    late_ms = np.array([r["send_lateness_ns"] / 1e6 for r in rows])
    due_s = np.array(arrivals)
    stalled = (due_s > 0.055) & (due_s < 0.10)  # due inside the stall, well clear of its edges
    assert (late_ms[stalled] > 5).all(), late_ms
    # upper bounds: the machine's own stalls (measured on this loop) come on top of the 60 ms one
    assert late_ms.max() > 30 and late_ms.max() < 200 + loop_stalls.max_ms
    excused_ms = np.array([loop_stalls.excused_ms(r["t_scheduled_ns"]) for r in rows])
    after = ~stalled & (due_s > 0.15)
    assert np.median(late_ms[after] - excused_ms[after]) < 5, (late_ms[after], excused_ms[after])


async def test_a_full_concurrency_cap_becomes_queue_time(loop_stalls):
    # 6 requests at once, 2 slots, each request takes ~100 ms: waves at 0, 100, 200 ms
    t_start, rows = await run(SimConfig(timing="fixed", ttft_ms=50, itl_ms=15), np.zeros(6), concurrency=2)
    queue_ms = sorted((r["t_sent_ns"] - r["t_scheduled_ns"]) / 1e6 for r in rows)
    # upper bounds: plus the time this loop (shared with the simulator) was measurably stalled
    slack_ms = sum((end - start) / 1e6 for start, end in loop_stalls.stalls_ns)
    assert queue_ms[0] < 5 + slack_ms and queue_ms[1] < 5 + slack_ms
    assert 80 < queue_ms[2] < 130 + slack_ms and 80 < queue_ms[3] < 130 + slack_ms
    assert 170 < queue_ms[4] < 260 + slack_ms and 170 < queue_ms[5] < 260 + slack_ms
    # waiting for a slot is queue time, not lateness: every send left soon after its slot was free
    assert max(r["send_lateness_ns"] for r in rows) / 1e6 < 20 + slack_ms

"""The client's self-check tells a busy host from a busy client: a concurrency-1 cell whose
generator shares its core with CPU-bound neighbours lags while using almost no CPU itself,
and is reported host-contended, never client-saturated."""

import asyncio
import multiprocessing
import os
import time

import numpy as np
import pytest

from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import ClientCheck, LoadGenerator, SelfCheck
from raybench.sim import SimConfig, SimServer
from raybench.workloads import RandomWorkload

MODEL = "deepseek-ai/DeepSeek-R1"
CORE = 0  # generator and neighbours share this core; the simulator may run anywhere


def _burn(core: int) -> None:
    os.sched_setaffinity(0, {core})
    while True:
        pass


def _one_cell(url: str, core: int, out) -> None:
    """A concurrency-1 cell in a process of its own, at the lowest priority on ``core``."""
    os.sched_setaffinity(0, {core})
    os.nice(19)  # the neighbours win every contest for the core, as a busy host's processes do
    client = ClientConfig(base_url=url, model=MODEL, request_timeout_s=60)
    specs = RandomWorkload(num_prompts=12, input_len=16, output_len=10).build(range(12))
    gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(12), concurrency=1)

    async def go():
        await gen.connect()
        await gen.run(time.perf_counter_ns())

    asyncio.run(go())
    _, requests = gen.drain()
    check = gen.self_check()
    out.put((check.cpu_s, check.wall_s, check.max_loop_lag_ms, check.mean_loop_lag_ms, requests.status))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
async def test_a_cell_beside_cpu_bound_neighbours_is_host_contended_not_client_saturated():
    server = SimServer(SimConfig(timing="fixed", ttft_ms=20, itl_ms=20))
    await server.start()
    ctx = multiprocessing.get_context("spawn")
    neighbours = [ctx.Process(target=_burn, args=(CORE,), daemon=True) for _ in range(3)]
    out = ctx.Queue()
    cell = ctx.Process(target=_one_cell, args=(server.url, CORE, out), daemon=True)
    try:
        for n in neighbours:
            n.start()
        cell.start()
        result = await asyncio.wait_for(asyncio.to_thread(out.get, True, 120), 130)
    finally:
        for p in (*neighbours, cell):
            if p.is_alive():
                p.kill()
            p.join(5)
        await server.stop()
    cpu_s, wall_s, max_lag_ms, mean_lag_ms, statuses = result
    assert statuses == [0] * 12  # every request completed: the cell was slow, not broken
    check = SelfCheck(cpu_s=cpu_s, wall_s=wall_s, max_loop_lag_ms=max_lag_ms, mean_loop_lag_ms=mean_lag_ms)
    assert check.max_loop_lag_ms > 50, check  # the neighbours did delay the loop
    assert check.cpu_share < 0.5, check  # while the client itself used little CPU
    assert check.verdict() is ClientCheck.HOST_CONTENDED

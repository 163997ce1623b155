"""A server that closes kept-alive connections (llama.cpp's llama-server does) costs no request:
a request whose connection closed before any response byte is sent once more on a fresh
connection and counted as retried; --no-keepalive opens a connection per request."""

import asyncio
import time

import aiohttp
import numpy as np
import pyarrow as pa
import pytest

from raybench.analysis.summary import summarize_cell
from raybench.loadgen.client import ClientConfig, request_body
from raybench.loadgen.generator import LoadGenerator
from raybench.loadgen.records import chunks_batch, requests_batch
from raybench.sim import FaultSpec, SimConfig, SimServer
from raybench.workloads import RandomWorkload

MODEL = "deepseek-ai/DeepSeek-R1"
CLOSING = SimConfig(timing="fixed", ttft_ms=5, itl_ms=1, faults=(FaultSpec(kind="close_after"),))


async def run_cell(config: SimConfig, *, n=64, concurrency=16, **client_kw):
    server = SimServer(config)
    await server.start()
    try:
        client = ClientConfig(base_url=server.url, model=MODEL, request_timeout_s=30, **client_kw)
        specs = RandomWorkload(num_prompts=n, input_len=16, output_len=8).build(range(n))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(n), concurrency=concurrency)
        await gen.connect()
        await gen.run(time.perf_counter_ns())
        chunks, requests = gen.drain()
    finally:
        await server.stop()
    return (pa.Table.from_batches([requests_batch(requests, "c", "a", "n", 0)]),
            pa.Table.from_batches([chunks_batch(chunks, "c", 0)]))


async def test_the_fault_mode_breaks_a_client_that_reuses_connections():
    """Without the retry the fault costs requests: the mode bites as llama-server does."""
    server = SimServer(CLOSING)
    await server.start()
    client = ClientConfig(base_url=server.url, model=MODEL)
    bodies = [request_body(client, s) for s in RandomWorkload(num_prompts=64, input_len=16, output_len=8).build(range(64))]
    lost, headers = 0, []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
            async def one(body):
                nonlocal lost
                try:
                    async with session.post(client.url, data=body, headers={"Content-Type": "application/json"}) as r:
                        headers.append(r.headers.get("Connection"))
                        await r.read()
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    lost += 1
            await asyncio.gather(*(one(b) for b in bodies))
    finally:
        await server.stop()
    assert lost > 0
    assert "close" not in {h.lower() for h in headers if h}  # keep-alive is advertised all along


@pytest.mark.parametrize("run", range(3))
async def test_no_request_is_lost_to_a_server_closing_kept_alive_connections(run):
    requests, chunks = await run_cell(CLOSING)
    rows = requests.to_pylist()
    assert [r["status"] for r in rows].count("ok") == 64, {r["error"] for r in rows if r["error"]}
    retried = [r for r in rows if r["attempts"] == 2]
    assert retried, "the fault closed no connection under a request: the retry was never exercised"
    assert all(r["attempts"] in (1, 2) for r in rows)
    for r in retried:  # t_sent is the retry's, taken when its body was written
        assert r["t_scheduled_ns"] <= r["t_sent_ns"] <= r["t_first_ns"]
    import polars as pl

    summary = summarize_cell(pl.from_arrow(requests), pl.from_arrow(chunks), compat="raybench", target_concurrency=16)
    assert summary["retried"] == len(retried)
    assert summary["failed"] == 0


async def test_no_keepalive_opens_a_connection_per_request_and_needs_no_retry():
    requests, _ = await run_cell(CLOSING, keepalive=False)
    rows = requests.to_pylist()
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["attempts"] == 1 for r in rows)


async def test_a_stream_cut_after_its_first_byte_is_never_sent_again():
    config = SimConfig(timing="zero", faults=(FaultSpec(kind="drop", every=2, after_chunks=2),))
    requests, _ = await run_cell(config, n=8, concurrency=2)
    rows = requests.to_pylist()
    cut = [r for r in rows if r["status"] == "disconnected"]
    assert len(cut) == 4
    assert all(r["attempts"] == 1 for r in rows)


async def test_a_refused_connection_is_not_retried():
    client = ClientConfig(base_url="http://127.0.0.1:9", model=MODEL, request_timeout_s=5)
    specs = RandomWorkload(num_prompts=2, input_len=16, output_len=4).build(range(2))
    gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(2), concurrency=1)
    await gen.run(time.perf_counter_ns())
    _, requests = gen.drain()
    assert requests.attempts == [1, 1]
    assert all("cannot connect" in e for e in requests.error)

"""Bad servers and broken streams become request rows with a status and the error text;
the other requests of the cell go on and nothing already recorded is lost."""

import time

import numpy as np
import pyarrow as pa
import pytest

from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.loadgen.records import chunks_batch, requests_batch
from raybench.sim import FaultSpec, SimConfig, SimServer
from raybench.workloads import RandomWorkload

MODEL = "deepseek-ai/DeepSeek-R1"


async def run_against(server_config: SimConfig, *, n=9, concurrency=1, output_len=8, **client_kw):
    server = SimServer(server_config)
    await server.start()
    try:
        client = ClientConfig(base_url=server.url, model=MODEL, **client_kw)
        specs = RandomWorkload(num_prompts=n, input_len=16, output_len=output_len).build(range(n))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(n), concurrency=concurrency)
        await gen.run(time.perf_counter_ns())
        chunks, requests = gen.drain()
        truth = server.ground_truth_chunks()
    finally:
        await server.stop()
    req = pa.Table.from_batches([requests_batch(requests, "c", "a", "n", 0)]).to_pylist()
    chk = pa.Table.from_batches([chunks_batch(chunks, "c", 0)]).to_pylist()
    return sorted(req, key=lambda r: r["request_id"]), chk, truth


@pytest.mark.parametrize(
    "fault, status, http_status, message",
    [
        (FaultSpec(kind="http_500", every=3), "http_error", 500, "HTTP 500"),
        (FaultSpec(kind="http_429", every=3), "http_error", 429, "HTTP 429"),
        (FaultSpec(kind="drop", every=3, after_chunks=3), "disconnected", 200, "after 3 events"),
        (FaultSpec(kind="malformed", every=3, after_chunks=2), "bad_response", 200, "malformed SSE event (not JSON)"),
        (FaultSpec(kind="not_openai", every=3), "bad_response", 200, "is this an OpenAI-compatible endpoint?"),
        (FaultSpec(kind="stall", every=3, after_chunks=2), "timeout", 200, "no data for 0.5 s"),
    ],
)
async def test_fault_becomes_a_row_and_the_run_goes_on(fault, status, http_status, message):
    config = SimConfig(timing="zero", faults=(fault,))
    req, chk, _ = await run_against(config, request_timeout_s=5, stall_timeout_s=0.5)
    assert len(req) == 9
    bad = [r for r in req if r["status"] != "ok"]
    assert len(bad) == 3, [r["error"] for r in req]
    for r in bad:
        assert r["status"] == status
        assert r["http_status"] == http_status
        assert message in r["error"]
    ok_ids = {r["request_id"] for r in req if r["status"] == "ok"}
    assert len(ok_ids) == 6
    for rid in ok_ids:
        assert sum(c["n_tokens"] for c in chk if c["request_id"] == rid) == 8
    # events read before the fault are kept
    if fault.after_chunks:
        for r in bad:
            assert len([c for c in chk if c["request_id"] == r["request_id"]]) >= fault.after_chunks


async def test_request_that_never_ends_hits_the_total_timeout():
    config = SimConfig(timing="fixed", ttft_ms=10, itl_ms=400)
    req, _, _ = await run_against(config, n=2, concurrency=2, output_len=50, request_timeout_s=1.0, stall_timeout_s=None)
    assert [r["status"] for r in req] == ["timeout", "timeout"]
    assert all("no complete response within 1 s" in r["error"] for r in req)
    assert all(0.9e9 < r["t_done_ns"] - r["t_sent_ns"] < 1.5e9 for r in req)


async def test_unreachable_server_is_a_disconnected_row_per_request():
    client = ClientConfig(base_url="http://127.0.0.1:9", model=MODEL)
    specs = RandomWorkload(num_prompts=3, input_len=4, output_len=2).build(range(3))
    gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(3), concurrency=3)
    await gen.run(time.perf_counter_ns())
    _, requests = gen.drain()
    rows = pa.Table.from_batches([requests_batch(requests, "c", "a", "n", 0)]).to_pylist()
    assert [r["status"] for r in rows] == ["disconnected"] * 3
    assert all("cannot connect to http://127.0.0.1:9" in r["error"] for r in rows)


async def test_streamed_rows_match_the_servers_ground_truth_one_to_one():
    req, chk, truth = await run_against(SimConfig(timing="zero", tokens_per_chunk=3), n=5, concurrency=5, output_len=10)
    assert all(r["status"] == "ok" and r["output_tokens"] == 10 for r in req)
    assert len(chk) == truth.num_rows
    assert sum(c["n_tokens"] for c in chk) == 50 == pa.compute.sum(truth["n_tokens"]).as_py()
    # 10 tokens at 3 per chunk: 4 token chunks per request
    assert sum(1 for c in chk if c["kind"] == "token") == 20


async def test_chat_endpoint_streams_a_role_chunk_then_tokens():
    server = SimServer(SimConfig(timing="zero"))
    await server.start()
    try:
        client = ClientConfig(base_url=server.url, model=MODEL, endpoint="/v1/chat/completions")
        specs = RandomWorkload(num_prompts=2, input_len=12, output_len=5).build(range(2))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(2), concurrency=2)
        await gen.run(time.perf_counter_ns())
        chunks, requests = gen.drain()
    finally:
        await server.stop()
    req = pa.Table.from_batches([requests_batch(requests, "c", "a", "n", 0)]).to_pylist()
    chk = pa.Table.from_batches([chunks_batch(chunks, "c", 0)]).to_pylist()
    assert [(r["status"], r["output_tokens"], r["server_prompt_tokens"]) for r in req] == [("ok", 5, 12)] * 2
    first = [c for c in chk if c["request_id"] == 0]
    assert first[0]["kind"] == "empty" and first[0]["n_tokens"] == 0  # the role-only chunk
    assert sum(c["n_tokens"] for c in first) == 5
    assert first[-1]["kind"] == "done"

"""Every injected fault has its observable effect, and the ground truth records it."""

import asyncio

import aiohttp
import orjson
import pytest
from simclient import completion_body, headers, read_sse

from raybench.sim import FaultSpec


def _rows(sim):
    return {r["request_key"]: r for r in sim.ground_truth_requests().to_pylist()}


@pytest.mark.parametrize(("kind", "status", "err_type"), [("http_500", 500, "InternalServerError"),
                                                          ("http_429", 429, "RateLimitError")])
async def test_http_error_faults_hit_every_nth_request(make_sim, session, kind, status, err_type):
    sim = await make_sim(faults=(FaultSpec(kind=kind, every=3),))
    statuses = []
    for i in range(1, 7):
        async with session.post(sim.url + "/v1/completions", data=completion_body(3), headers=headers(f"r{i}")) as resp:
            statuses.append(resp.status)
            if resp.status != 200:
                error = (await resp.json())["error"]
                assert (error["code"], error["type"]) == (status, err_type)
            else:
                await resp.read()
    assert statuses == [200, 200, status, 200, 200, status]
    rows = _rows(sim)
    assert (rows["r3"]["status"], rows["r3"]["http_status"], rows["r3"]["fault"]) == ("http_error", status, kind)
    assert rows["r4"]["fault"] is None and rows["r4"]["status"] == "ok"


@pytest.mark.parametrize("timing", ["zero", "engine"])
async def test_drop_closes_the_stream_after_k_events(make_sim, session, timing):
    extra = {"model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "H100", "num_gpus": 1} if timing == "engine" else {}
    sim = await make_sim(timing=timing, faults=(FaultSpec(kind="drop", after_chunks=3),), **extra)
    seen = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(sim.url + "/v1/completions", data=completion_body(10), headers=headers("d")) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: "):
                    seen.append(line)
    assert len(seen) == 3
    assert sim.ground_truth_chunks().num_rows == 3
    row = _rows(sim)["d"]
    assert (row["status"], row["fault"], row["output_tokens"]) == ("disconnected", "drop", 3)
    if timing == "engine":
        assert sim.app.engine_core.kv_used_tokens == 0  # the aborted request gave its KV back


async def test_stall_stops_sending_but_keeps_the_connection(make_sim, session):
    sim = await make_sim(faults=(FaultSpec(kind="stall", after_chunks=2),))
    seen = []

    async def read():
        async with session.post(sim.url + "/v1/completions", data=completion_body(10), headers=headers("s")) as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    seen.append(line)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(read(), 0.3)
    assert len(seen) == 2
    row = _rows(sim)["s"]
    assert (row["status"], row["fault"], row["output_tokens"]) == ("stalled", "stall", 2)
    assert sim.ground_truth_chunks().num_rows == 2


async def test_malformed_event_then_the_rest_of_the_stream(make_sim, session):
    sim = await make_sim(faults=(FaultSpec(kind="malformed", every=2, after_chunks=2),))
    for key in ("ok", "bad"):
        async with session.post(sim.url + "/v1/completions", data=completion_body(4), headers=headers(key)) as resp:
            events = await read_sse(resp)
        payloads = [p for _, p in events]
        if key == "ok":
            assert b"{not json" not in payloads
        else:
            assert payloads[2] == b"{not json"
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(payloads[2])
            assert len(payloads) == 4 + 2 + 1 and payloads[-1] == b"[DONE]"  # still ends normally
    truth = sim.ground_truth_chunks().to_pydict()
    bad = [k for key, k in zip(truth["request_key"], truth["kind"]) if key == "bad"]
    assert bad == ["token", "token", "malformed", "token", "token", "usage", "done"]
    assert _rows(sim)["bad"]["status"] == "bad_response" and _rows(sim)["bad"]["output_tokens"] == 4


async def test_not_openai_answers_html(make_sim, session):
    sim = await make_sim(faults=(FaultSpec(kind="not_openai"),))
    async with session.post(sim.url + "/v1/completions", data=completion_body(4), headers=headers("h")) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
        assert (await resp.text()).startswith("<!DOCTYPE html>")
    assert (_rows(sim)["h"]["status"], _rows(sim)["h"]["fault"]) == ("bad_response", "not_openai")


async def test_several_faults_first_match_wins_and_reset_restarts_the_count(make_sim, session):
    sim = await make_sim(faults=(FaultSpec(kind="http_500", every=4), FaultSpec(kind="http_429", every=2)))

    async def statuses(n):
        out = []
        for _ in range(n):
            async with session.post(sim.url + "/v1/completions", data=completion_body(1)) as resp:
                await resp.read()
                out.append(resp.status)
        return out

    assert await statuses(4) == [200, 429, 200, 500]
    async with session.post(sim.url + "/sim/reset") as resp:
        assert resp.status == 200
    assert await statuses(2) == [200, 429]

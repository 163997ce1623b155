"""The simulated OpenAI server end to end, with a real aiohttp client."""

import asyncio
import math

import aiohttp
import orjson
import pyarrow as pa
import pytest

import raybench
from simclient import completion_body, headers, read_sse


async def _stream(session, sim, key, body, path="/v1/completions"):
    async with session.post(sim.url + path, data=body, headers=headers(key)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Request-Id"] == key
        return await read_sse(resp)


async def test_completion_stream_usage_and_ground_truth_agree(make_sim, session):
    sim = await make_sim()
    events = await _stream(session, sim, "cell-0", completion_body(50, prompt=range(128), model="deepseek-ai/DeepSeek-R1"))
    assert events[-1][1] == b"[DONE]"
    chunks = [orjson.loads(p) for _, p in events[:-1]]
    token_chunks = [c for c in chunks if c["choices"]]
    assert len(token_chunks) == 50 and "".join(c["choices"][0]["text"] for c in token_chunks) == " tok" * 50
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 128, "completion_tokens": 50, "total_tokens": 178}
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    deltas = [b - a for a, b in zip([0] + counts, counts)]
    assert sum(deltas) == 50
    truth = sim.ground_truth_chunks().to_pydict()
    assert truth["request_key"] == ["cell-0"] * len(events)  # one row per event the client saw
    assert truth["seq"] == list(range(len(events)))
    assert truth["n_tokens"] == deltas + [0]
    assert truth["kind"] == ["token"] * 50 + ["usage", "done"]
    row = sim.ground_truth_requests().to_pylist()[0]
    assert (row["request_key"], row["prompt_tokens"], row["output_tokens"], row["status"]) == ("cell-0", 128, 50, "ok")
    assert row["t_arrival_ns"] <= truth["t_ns"][0] <= row["t_end_ns"]


async def test_chat_stream_starts_with_the_role_chunk(make_sim, session):
    sim = await make_sim(model="tiny")
    body = orjson.dumps({"model": "tiny", "messages": [{"role": "user", "content": "three words here"}],
                         "max_completion_tokens": 4, "ignore_eos": True, "stream": True,
                         "stream_options": {"include_usage": True}})
    events = await _stream(session, sim, "chat-1", body, "/v1/chat/completions")
    chunks = [orjson.loads(p) for _, p in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny" for c in chunks)
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:5]] == [" tok"] * 4
    assert chunks[4]["choices"][0]["finish_reason"] == "length"
    assert chunks[5]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert sim.ground_truth_chunks().column("kind").to_pylist() == ["empty"] + ["token"] * 4 + ["usage", "done"]


async def test_min_and_max_tokens_with_seeded_early_eos(make_sim, session):
    sim = await make_sim(seed=7)

    async def length(key):
        body = completion_body(30, ignore_eos=False, min_tokens=10)
        events = await _stream(session, sim, key, body)
        last = orjson.loads(events[-3][1])
        usage = orjson.loads(events[-2][1])["usage"]["completion_tokens"]
        assert last["choices"][0]["finish_reason"] == ("length" if usage == 30 else "stop")
        return usage

    lengths = [await length(f"k-{i}") for i in range(20)]
    assert all(10 <= n <= 30 for n in lengths)
    assert len(set(lengths)) > 3  # EOS points differ per request ...
    assert [await length(f"k-{i}") for i in range(5)] == lengths[:5]  # ... but not per repeat
    forced = await _stream(session, sim, "f", completion_body(30, min_tokens=10))
    assert orjson.loads(forced[-2][1])["usage"]["completion_tokens"] == 30  # ignore_eos: exactly max


@pytest.mark.parametrize("n", [1, 7, 8, 33])
async def test_tokens_per_chunk_four(make_sim, session, n):
    sim = await make_sim(tokens_per_chunk=4)
    events = await _stream(session, sim, "k4", completion_body(n))
    token_chunks = [orjson.loads(p) for _, p in events[:-1]][:-1]
    assert len(token_chunks) == math.ceil(n / 4)
    assert sum(c["choices"][0]["text"].count("tok") for c in token_chunks) == n
    assert sim.ground_truth_chunks().column("n_tokens").to_pylist()[:-2] == [
        c["choices"][0]["text"].count("tok") for c in token_chunks]


async def test_non_streamed_completion_and_chat(make_sim, session):
    sim = await make_sim()
    async with session.post(sim.url + "/v1/completions", data=completion_body(5, stream=False)) as resp:
        body = await resp.json()
    assert body["choices"][0]["text"] == " tok" * 5 and body["usage"]["completion_tokens"] == 5
    chat = orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    async with session.post(sim.url + "/v1/chat/completions", data=chat) as resp:
        body = await resp.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": " tok tok", "tool_calls": []}
    assert sim.ground_truth_chunks().num_rows == 0
    assert sim.ground_truth_requests().column("output_tokens").to_pylist() == [5, 2]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", "/v1/completions", b"{not json", 400, "Invalid JSON"),
        ("POST", "/v1/completions", b'{"max_tokens": 3}', 400, "`prompt` is required"),
        ("POST", "/v1/completions", b'{"prompt": "a", "max_tokens": -3}', 400, "at least 1"),
        ("POST", "/v1/chat/completions", b'{"prompt": "a"}', 400, "`messages` is required"),
        ("POST", "/v1/completions", b'{"prompt": "a", "model": "gpt-9"}', 404, "does not exist"),
        ("GET", "/v1/completions", None, 405, "use POST"),
        ("GET", "/v2/nothing", None, 404, "no route"),
    ],
)
async def test_bad_requests_get_openai_errors(make_sim, session, method, path, body, status, needle):
    sim = await make_sim()
    async with session.request(method, sim.url + path, data=body) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] == status and needle in error["message"]
    if path.startswith("/v1/") and method == "POST":
        row = sim.ground_truth_requests().to_pylist()[0]
        assert (row["status"], row["http_status"]) == ("http_error", status)


async def test_models_health_and_ground_truth_endpoints(make_sim, session):
    sim = await make_sim()
    async with session.get(sim.url + "/health") as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with session.get(sim.url + "/v1/models") as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == ["deepseek-ai/DeepSeek-R1"]
    async with session.get(sim.url + "/version") as resp:
        assert await resp.json() == {"version": raybench.__version__}
    await _stream(session, sim, "gt", completion_body(3))
    for table, rows in (("chunks", 5), ("requests", 1)):
        async with session.get(sim.url + f"/sim/ground_truth?table={table}") as resp:
            assert resp.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
            got = pa.ipc.open_stream(await resp.read()).read_all()
        assert got.num_rows == rows
    assert got.equals(sim.ground_truth_requests())
    async with session.get(sim.url + "/sim/ground_truth?table=nope") as resp:
        assert resp.status == 400
    async with session.post(sim.url + "/sim/reset") as resp:
        assert resp.status == 200
    assert sim.ground_truth_chunks().num_rows == 0 and sim.ground_truth_requests().num_rows == 0


async def test_keep_alive_reuses_one_connection(make_sim):
    sim = await make_sim()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for i in range(20):
            await _stream(session, sim, f"ka-{i}", completion_body(10))
        assert len(sim.app.connections) == 1
    assert sim.ground_truth_requests().num_rows == 20


async def test_pipelined_requests_are_answered_in_order(make_sim):
    sim = await make_sim()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    body = completion_body(2, stream=False)
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    writer.write(request * 2 + b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # the server closes after the third
    writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 3 and data.count(b'"completion_tokens":2') == 2
    assert data.endswith(b"content-length: 0\r\nconnection: close\r\n\r\n")


async def _raw(sim, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(data)
    reply = await asyncio.wait_for(reader.read(), 5)  # read until the server closes
    writer.close()
    return reply


async def test_http10_and_refused_chunked_bodies_close_the_connection(make_sim):
    sim = await make_sim()
    reply = await _raw(sim, b"GET /health HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in reply
    reply = await _raw(sim, b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 411 Length Required") and b"Content-Length" in reply
    reply = await _raw(sim, b"NONSENSE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request")


@pytest.mark.parametrize("timing", ["fixed", "engine"])
async def test_client_leaving_mid_stream_is_logged_and_frees_the_engine(make_sim, session, timing):
    extra = {"model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "H100", "num_gpus": 1} if timing == "engine" else {}
    sim = await make_sim(timing=timing, ttft_ms=1, itl_ms=1, **extra)
    seen = 0
    async with session.post(sim.url + "/v1/completions", data=completion_body(1000), headers=headers("gone")) as resp:
        async for line in resp.content:
            seen += line.startswith(b"data: ")
            if seen == 3:
                break
        resp.close()  # drop the connection
    for _ in range(200):
        if sim.ground_truth_requests().num_rows:
            break
        await asyncio.sleep(0.01)
    row = sim.ground_truth_requests().to_pylist()[0]
    assert row["status"] == "disconnected" and 3 <= row["output_tokens"] < 1000
    if timing == "engine":
        assert sim.app.engine_core.kv_used_tokens == 0 and not sim.app.engine_core.has_work()


async def test_ground_truth_rows_match_what_concurrent_clients_saw(make_sim, session):
    sim = await make_sim(tokens_per_chunk=3)

    async def one(i):
        body = completion_body(200 + i, continuous=bool(i % 2), usage=bool(i % 3))
        events = await _stream(session, sim, f"c-{i}", body)
        return f"c-{i}", len(events)

    seen = dict(await asyncio.gather(*(one(i) for i in range(32))))
    truth = sim.ground_truth_chunks()
    keys = truth.column("request_key").to_pylist()
    assert {k: keys.count(k) for k in seen} == seen
    assert truth.num_rows == sum(seen.values())
    tokens = sim.ground_truth_requests().to_pydict()
    assert dict(zip(tokens["request_key"], tokens["output_tokens"])) == {f"c-{i}": 200 + i for i in range(32)}

"""The app's routes and counters, driven through a real HttpConnection over a fake transport
(no socket): /metrics and /sim/stats, the cache-reset routes, a chat request's default length."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

import orjson
import pytest

from raybench.sim import SimConfig
from raybench.sim.app import SimApp
from raybench.sim.features import defaults
from raybench.sim.httpproto import HttpConnection, HttpRequest

R1_CONTEXT_TOKENS = 163840  # DeepSeek-R1's max_position_embeddings, vLLM's max_model_len for it


class _Transport:
    """Keeps what the server writes; never pushes back (no flow control in these tests)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, parts) -> None:
        for part in parts:
            self.data += part

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close


@pytest.fixture
def make_app():
    loop = asyncio.new_event_loop()
    apps: list[SimApp] = []

    def make(**overrides) -> SimApp:
        apps.append(SimApp(SimConfig(**overrides), loop))
        return apps[-1]

    yield make
    for app in apps:
        app.close()
    loop.close()


def _call(app: SimApp, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body as written; chunk-framed when streamed)."""
    transport = _Transport()
    conn = HttpConnection(app)
    conn.connection_made(transport)
    app.handle(conn, HttpRequest(method=method, path=path, query="", headers={},
                                 body=orjson.dumps(body) if body is not None else b"", t_arrival_ns=perf_counter_ns()))
    head, _, payload = bytes(transport.data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def _metrics(app: SimApp) -> dict[str, float]:
    status, text = _call(app, "GET", "/metrics")
    assert status == 200
    samples = (line.rsplit(" ", 1) for line in text.decode().splitlines() if not line.startswith("#"))
    return {name.partition("{")[0]: float(value) for name, value in samples}


def _completion(n: int, *, stream: bool, **extra) -> dict:
    return {"prompt": "a b", "max_tokens": n, "ignore_eos": True, "stream": stream, **extra}


def test_non_streamed_tokens_count_in_stats_and_metrics(make_app):
    app = make_app()
    assert _call(app, "POST", "/v1/completions", _completion(7, stream=False))[0] == 200
    assert _call(app, "POST", "/v1/completions", _completion(7, stream=True))[0] == 200
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": True}
    assert _call(app, "POST", "/v1/chat/completions", chat)[0] == 200
    stats = app.stats()
    # 7 + 3 tokens in whole bodies (no SSE events), 7 streamed in 7 token events and [DONE]
    assert (stats["tokens_written"], stats["events_written"]) == (17, 8)
    assert _metrics(app)["sim:generation_tokens_total"] == 17


def test_flush_cache_answers_get_and_post_and_reset_prefix_cache_post_only(make_app):
    app = make_app()
    for method in ("GET", "POST"):
        status, body = _call(app, method, "/flush_cache")
        assert status == 200 and orjson.loads(body)["freed_tokens"] == 0
    assert _call(app, "POST", "/reset_prefix_cache")[0] == 200
    assert _call(app, "GET", "/reset_prefix_cache")[0] == 404  # vLLM's route takes POST only


def test_a_request_refused_at_admission_is_not_counted_in_metrics(make_app):
    app = make_app(timing="engine", features=defaults("vllm").with_(max_model_len=64))
    assert _call(app, "POST", "/v1/completions", _completion(4, stream=True, prompt="a b c"))[0] == 200
    status, body = _call(app, "POST", "/v1/completions", _completion(64, stream=True, prompt="a"))  # 65 > 64
    assert status == 400 and "maximum context length" in orjson.loads(body)["error"]["message"]
    metrics = _metrics(app)
    assert (metrics["sim:request_arrivals_total"], metrics["sim:prompt_tokens_total"]) == (1, 3)
    assert metrics["sim:prefix_cache_queries_total"] == 3


def _chat(content: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": content}], "ignore_eos": True, **extra}


def test_chat_without_a_length_gets_the_context_its_prompt_leaves(make_app):
    app = make_app(features=defaults("vllm").with_(max_model_len=64))  # as `--max-model-len 64`
    status, body = _call(app, "POST", "/v1/chat/completions", _chat("two words"))
    answer = orjson.loads(body)
    assert status == 200 and answer["usage"]["completion_tokens"] == 62
    assert answer["choices"][0]["finish_reason"] == "length"
    # completions keep OpenAI's and vLLM's default of 16
    status, body = _call(app, "POST", "/v1/completions", {"prompt": "two words", "ignore_eos": True})
    assert status == 200 and orjson.loads(body)["usage"]["completion_tokens"] == 16
    # a prompt that leaves no room is refused, as vLLM's front end refuses it
    status, body = _call(app, "POST", "/v1/chat/completions", _chat(" ".join(["w"] * 64)))
    error = orjson.loads(body)["error"]
    assert status == 400 and error["param"] == "messages" and "maximum context length is 64" in error["message"]


def test_chat_default_length_is_the_served_model_s_context(make_app):
    app = make_app()  # DeepSeek-R1, no --max-model-len
    status, body = _call(app, "POST", "/v1/chat/completions", _chat("two words"))
    assert status == 200 and orjson.loads(body)["usage"]["completion_tokens"] == R1_CONTEXT_TOKENS - 2
    # a model the simulator has no profile of has no known context: 16, as before
    app = make_app(model="tiny")
    status, body = _call(app, "POST", "/v1/chat/completions", _chat("two words", model="tiny"))
    assert status == 200 and orjson.loads(body)["usage"]["completion_tokens"] == 16

"""Cached response bodies: SSE layout, usage counts, k tokens per chunk, steps and pieces."""

import dataclasses
import math

import orjson
import pytest

from raybench.sim.api import parse_generation
from raybench.sim.groundtruth import KINDS
from raybench.sim.responses import PlanCache

MODEL = "m"


def _plan(n, k=1, chat=False, usage=True, continuous=True, stream=True, max_tokens=None, cache=None):
    body = {"max_tokens": max_tokens or n, "stream": stream}
    body.update({"messages": [{"role": "user", "content": "a b c"}]} if chat else {"prompt": [1, 2, 3]})
    if stream:
        body["stream_options"] = {"include_usage": usage, "continuous_usage_stats": continuous}
    req = parse_generation(orjson.dumps(body), chat=chat, served_model=MODEL)
    return (cache or PlanCache(MODEL, 0)).get(req, n, k)


def _events(body: bytes) -> list[bytes]:
    """Undo HTTP chunked framing; check it ends with the zero chunk; return SSE payloads."""
    events, pos = [], 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol], 16)
        if size == 0:
            assert body[eol:] == b"\r\n\r\n"
            return events
        data = body[eol + 2 : eol + 2 + size]
        assert data.startswith(b"data: ") and data.endswith(b"\n\n")
        events.append(data[6:-2])
        pos = eol + 2 + size + 2


@pytest.mark.parametrize("chat", [False, True])
def test_stream_usage_counts_and_kinds(chat):
    plan = _plan(5, chat=chat)
    payloads = _events(plan.body)
    assert payloads[-1] == b"[DONE]"
    parsed = [orjson.loads(p) for p in payloads[:-1]]
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    texts = [c["choices"][0]["delta" if chat else "text"] for c in parsed[:-1]]
    if chat:
        assert texts[0] == {"role": "assistant", "content": ""}
        texts = [t["content"] for t in texts[1:]]
    assert "".join(texts).split() == ["tok"] * 5
    # continuous usage: the deltas of completion_tokens add up to the total
    counts = [c["usage"]["completion_tokens"] for c in parsed]
    assert sum(b - a for a, b in zip([0] + counts, counts)) == 5
    assert list(plan.events.n_tokens) == [b - a for a, b in zip([0] + counts, counts)] + [0]
    kinds = [KINDS[k] for k in plan.events.kinds]
    assert kinds == (["empty"] if chat else []) + ["token"] * 5 + ["usage", "done"]
    finish = [c["choices"][0]["finish_reason"] for c in parsed[:-1]]
    assert finish[-1] == "length" and set(finish[:-1]) == {None}


@pytest.mark.parametrize("n", [1, 3, 4, 9, 1000])
def test_k_tokens_per_chunk_gives_ceil_n_over_k_token_chunks(n):
    plan = _plan(n, k=4, usage=False, continuous=False)
    chunks = [orjson.loads(p) for p in _events(plan.body)[:-1]]
    assert len(chunks) == math.ceil(n / 4) == plan.num_steps
    assert [c["choices"][0]["text"].count("tok") for c in chunks] == list(plan.events.n_tokens)[:-1]
    assert all(c["usage"] is None for c in chunks)  # completions carry usage: null without stats


def test_no_usage_chunk_without_include_usage_and_chat_omits_usage_key():
    plan = _plan(2, chat=True, usage=False, continuous=False)
    parsed = [orjson.loads(p) for p in _events(plan.body)[:-1]]
    assert len(parsed) == 3 and all("usage" not in c for c in parsed)


def test_early_stop_reports_stop_and_non_stream_body():
    plan = _plan(3, max_tokens=10)
    last = orjson.loads(_events(plan.body)[-3])
    assert last["choices"][0]["finish_reason"] == "stop"
    full = orjson.loads(_plan(4, stream=False, chat=True).body)
    assert full["object"] == "chat.completion"
    assert full["choices"][0]["message"]["content"] == " tok" * 4
    assert full["usage"]["completion_tokens"] == 4


def test_steps_and_pieces_cover_every_event_once():
    plan = _plan(1000, chat=True)
    steps = list(plan.step_events)
    assert steps[0] == 0 and steps[-1] == plan.num_events and steps == sorted(set(steps))
    assert steps[1] == 2  # the role chunk rides with the first token
    assert plan.num_events - steps[-2] == 3  # last token, usage, [DONE]
    flat = [e for a, b in plan.pieces for e in range(a, b)]
    assert flat == list(range(plan.num_events))
    sizes = [plan.event_bytes[b] - plan.event_bytes[a] for a, b in plan.pieces]
    assert min(sizes[:-1]) >= 64 * 1024
    assert plan.event_bytes[-1] == len(plan.body) and plan.cum_tokens[-1] == 1000


def test_cache_returns_the_same_plan_and_evicts_beyond_its_budget():
    cache = PlanCache(MODEL, 0, max_bytes=200_000)
    first = _plan(300, cache=cache)
    assert _plan(300, cache=cache) is first
    _plan(301, cache=cache)
    _plan(302, cache=cache)  # over budget: the oldest goes
    assert _plan(300, cache=cache) is not first


@pytest.mark.parametrize("chat", [False, True])
def test_cached_tokens_ride_the_final_usage_only(chat):
    """vLLM sets prompt_tokens_details on the final usage, never on continuous-usage chunks."""
    cache = PlanCache(MODEL, 0)
    req = parse_generation(orjson.dumps({
        "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        **({"messages": [{"role": "user", "content": "a b c"}]} if chat else {"prompt": [1, 2, 3]})}),
        chat=chat, served_model=MODEL)
    cached, plain = cache.get(req, 4, 1, cached_tokens=2), cache.get(req, 4, 1)
    usages = [orjson.loads(p)["usage"] for p in _events(cached.body)[:-1]]
    assert all("prompt_tokens_details" not in u for u in usages[:-1])
    assert usages[-1]["prompt_tokens_details"] == {"cached_tokens": 2}
    # the engine switches a stream to the cached plan after its first token: every event before
    # the final usage must be byte-for-byte the plain plan's
    final_usage = cached.num_events - 2
    assert cached.body[: cached.event_bytes[final_usage]] == plain.body[: plain.event_bytes[final_usage]]
    whole = cache.get(dataclasses.replace(req, stream=False, include_usage=False, continuous_usage=False), 4, 1, 2)
    assert orjson.loads(whole.body)["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}

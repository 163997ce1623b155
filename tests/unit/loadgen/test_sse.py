import orjson
import pytest

from raybench.loadgen.records import K_DONE, K_EMPTY, K_TOKEN, K_USAGE, ChunkColumns
from raybench.loadgen.sse import SseReader, StreamError


def event(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion(text, usage=None, finish=None):
    return event({"choices": [{"index": 0, "text": text, "finish_reason": finish}], "usage": usage})


def rows(cols: ChunkColumns):
    return list(zip(cols.seq, cols.t_ns, cols.n_tokens, cols.kind))


def test_completion_stream_with_continuous_usage_counts_tokens_per_chunk():
    cols = ChunkColumns()
    reader = SseReader(7)
    first = completion(" a", {"prompt_tokens": 5, "completion_tokens": 1})
    stream = (
        first
        + completion(" b c d", {"prompt_tokens": 5, "completion_tokens": 4})
        + completion("", {"prompt_tokens": 5, "completion_tokens": 4}, finish="length")
        + event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 3}}})
        + b"data: [DONE]\n\n"
    )
    # split at awkward places: mid-event and between the two newlines of a delimiter
    n = len(first)
    parts = [stream[:10], stream[10 : n - 1], stream[n - 1 : n + 1], stream[n + 1 :]]
    for t, part in enumerate(parts):
        reader.feed(part, 1000 + t, cols)
    reader.close(2000, cols)
    assert [r[2] for r in rows(cols)] == [1, 3, 0, 0, 0]
    assert [r[3] for r in rows(cols)] == [K_TOKEN, K_TOKEN, K_EMPTY, K_USAGE, K_DONE]
    assert list(cols.request_id) == [7] * 5
    assert list(cols.seq) == [0, 1, 2, 3, 4]
    assert reader.tokens == 4 and reader.output_tokens == 4 and reader.prompt_tokens == 5
    assert reader.cached_tokens == 3
    assert reader.done and reader.finished
    assert reader.t_first_ns == 1002  # the read that completed the first event


def test_without_continuous_usage_each_text_chunk_is_one_token_and_final_usage_is_not_a_chunk_count():
    cols = ChunkColumns()
    reader = SseReader(0)
    reader.feed(completion(" a") + completion(" b") + event({"choices": [], "usage": {"completion_tokens": 2}}), 5, cols)
    reader.feed(b"data: [DONE]\n\n", 6, cols)
    assert list(cols.n_tokens) == [1, 1, 0, 0]
    assert reader.output_tokens == 2


def test_chat_role_chunk_is_empty_and_does_not_start_ttft():
    cols = ChunkColumns()
    reader = SseReader(0)
    reader.feed(event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}), 1, cols)
    reader.feed(event({"choices": [{"index": 0, "delta": {"content": "hi"}}]}), 2, cols)
    reader.feed(event({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]}), 3, cols)
    assert list(cols.kind) == [K_EMPTY, K_TOKEN, K_TOKEN]
    assert reader.t_first_ns == 2


def test_comments_crlf_and_trailing_event_without_blank_line():
    cols = ChunkColumns()
    reader = SseReader(0)
    reader.feed(b": ping\r\n\r\n" + completion(" a").replace(b"\n\n", b"\r\n\r\n"), 1, cols)
    reader.feed(b"data: [DONE]", 2, cols)
    reader.close(3, cols)
    assert list(cols.kind) == [K_TOKEN, K_DONE]
    assert list(cols.t_ns) == [1, 3]


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"data: {not json\n\n", "malformed SSE event"),
        (b"data: [1, 2]\n\n", "not a JSON object"),
        (b'data: {"error": {"message": "boom"}}\n\n', "error event in stream"),
        (b'data: {"id": "x"}\n\n', "neither choices nor usage"),
        (b"<html>hello</html>\n\n", "not an SSE event"),
    ],
)
def test_bad_events_raise_stream_error_naming_the_problem(payload, message):
    with pytest.raises(StreamError, match=message):
        SseReader(0).feed(payload, 1, ChunkColumns())


def test_non_streamed_body_is_one_chunk_with_the_usage_count():
    cols = ChunkColumns()
    reader = SseReader(0)
    reader.complete_body({"choices": [{"text": "a b c"}], "usage": {"completion_tokens": 3, "prompt_tokens": 2}}, 9, cols)
    assert list(cols.n_tokens) == [3] and reader.t_first_ns == 9 and reader.output_tokens == 3

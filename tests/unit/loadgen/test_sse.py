import orjson
import pytest

from raybench.loadgen.records import K_DONE, K_EMPTY, K_TOKEN, K_USAGE, ChunkColumns, chunks_batch
from raybench.loadgen.sse import SseReader, StreamError


def event(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion(text, usage=None, finish=None):
    return event({"choices": [{"index": 0, "text": text, "finish_reason": finish}], "usage": usage})


KINDS = {K_TOKEN: "token", K_EMPTY: "empty", K_USAGE: "usage", K_DONE: "done"}


def rows(reader: SseReader):
    """(request_id, seq, t_ns, n_tokens, kind) per event, through the real Arrow batch."""
    cols = ChunkColumns()
    reader.flush_into(cols)
    batch = chunks_batch(cols, "cell", 0).to_pylist()
    return [(r["request_id"], r["seq"], r["t_ns"], r["n_tokens"], r["kind"]) for r in batch]


def test_completion_stream_with_continuous_usage_counts_tokens_per_chunk():
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
        reader.feed(part, 1000 + t)
    reader.close(2000)
    events = rows(reader)
    assert [r[3] for r in events] == [1, 3, 0, 0, 0]
    assert [r[4] for r in events] == ["token", "token", "empty", "usage", "done"]
    assert [r[0] for r in events] == [7] * 5
    assert [r[1] for r in events] == [0, 1, 2, 3, 4]
    assert reader.tokens == 4 and reader.output_tokens == 4 and reader.prompt_tokens == 5
    assert reader.cached_tokens == 3
    assert reader.done and reader.finished
    assert reader.t_first_ns == 1002  # the read that completed the first event


def test_without_continuous_usage_each_text_chunk_is_one_token_and_final_usage_is_not_a_chunk_count():
    reader = SseReader(0)
    reader.feed(completion(" a") + completion(" b") + event({"choices": [], "usage": {"completion_tokens": 2}}), 5)
    reader.feed(b"data: [DONE]\n\n", 6)
    assert [r[3] for r in rows(reader)] == [1, 1, 0, 0]
    assert reader.output_tokens == 2


def test_chat_role_chunk_is_empty_and_does_not_start_ttft():
    reader = SseReader(0)
    reader.feed(event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}), 1)
    reader.feed(event({"choices": [{"index": 0, "delta": {"content": "hi"}}]}), 2)
    reader.feed(event({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]}), 3)
    assert [r[4] for r in rows(reader)] == ["empty", "token", "token"]
    assert reader.t_first_ns == 2


def test_comments_crlf_and_trailing_event_without_blank_line():
    reader = SseReader(0)
    reader.feed(b": ping\r\n\r\n" + completion(" a").replace(b"\n\n", b"\r\n\r\n"), 1)
    reader.feed(b"data: [DONE]", 2)
    reader.close(3)
    assert [(r[2], r[4]) for r in rows(reader)] == [(1, "token"), (3, "done")]


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
        SseReader(0).feed(payload, 1)


def test_non_streamed_body_is_one_chunk_with_the_usage_count():
    reader = SseReader(0)
    reader.complete_body({"choices": [{"text": "a b c"}], "usage": {"completion_tokens": 3, "prompt_tokens": 2}}, 9)
    assert [r[3] for r in rows(reader)] == [3] and reader.t_first_ns == 9 and reader.output_tokens == 3


def read(stream: bytes, *, split_at: int | None = None) -> SseReader:
    reader = SseReader(0)
    parts = [stream] if split_at is None else [stream[:split_at], stream[split_at:]]
    for t, part in enumerate(parts):
        reader.feed(part, 1 + t)
    reader.close(9)
    return reader


TWO_TOKENS = {"choices": [{"index": 0, "text": " a", "finish_reason": None}], "usage": {"completion_tokens": 2}}


@pytest.mark.parametrize("stream", [
    # a keep-alive comment line opening the event: the event's data is still read
    b": keep-alive\n" + event(TWO_TOKENS),
    # a comment, an id or a retry line after the data line (first the fast path's prefix)
    event(TWO_TOKENS)[:-1] + b": keep-alive\n\n",
    event(TWO_TOKENS)[:-1] + b"id: 7\n\n",
    event(TWO_TOKENS).replace(b"data: ", b"data:")[:-1] + b"retry: 10\n\n",
    # the value over two data lines: joined with a newline, which JSON takes as whitespace
    b'data: {"choices": [{"index": 0, "text": " a"}],\ndata: "usage": {"completion_tokens": 2}}\n\n',
], ids=["comment-first", "comment-after", "id-after", "retry-after-nospace", "two-data-lines"])
def test_an_event_of_several_lines_is_read_as_the_sse_standard_frames_it(stream):
    reader = read(stream)
    assert [(r[3], r[4]) for r in rows(reader)] == [(2, "token")]
    assert reader.output_tokens == 2 and reader.t_first_ns == 1


def test_lone_cr_line_ends_at_any_split():
    stream = (completion(" a") + completion(" b") + b": ping\n\n" + b"data: [DONE]\n\n").replace(b"\n", b"\r")
    for cut in range(len(stream) + 1):
        reader = read(stream, split_at=cut)
        assert [r[4] for r in rows(reader)] == ["token", "token", "done"], cut


def test_crlf_split_between_its_cr_and_lf_ends_one_line_not_two():
    # two data lines of one event: a CR held back as a line end of its own would split the event
    stream = b'data: {"choices": [{"index": 0, "text": " a"}],\r\ndata: "usage": {"completion_tokens": 1}}\r\n\r\n'
    cut = stream.index(b"\r") + 1
    reader = read(stream, split_at=cut)
    assert [(r[3], r[4]) for r in rows(reader)] == [(1, "token")]


@pytest.mark.parametrize("space", [b"data: ", b"data:"])
def test_completion_tokens_going_down_is_refused_on_either_path(space):
    stream = completion(" a", {"completion_tokens": 3}) + completion(" b", {"completion_tokens": 2})
    with pytest.raises(StreamError, match="went down from 3 to 2"):
        read(stream.replace(b"data: ", space))


def test_tool_call_deltas_count_a_token_each_without_usage_but_are_no_text():
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"x\""}}
    stream = (event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
              + event({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
              + event({"choices": [{"index": 0, "delta": {"tool_calls": []}}]})
              + event({"choices": [{"index": 0, "delta": {"function_call": {"arguments": "1}"}}}]})
              + b"data: [DONE]\n\n")
    reader = read(stream)
    # kind stays empty: SGLang's client, which times text only, does not count them
    assert [(r[3], r[4]) for r in rows(reader)] == [(0, "empty"), (1, "empty"), (0, "empty"), (1, "empty"), (0, "done")]
    assert reader.tokens == 2 and reader.t_first_ns == 1


def test_usage_after_events_counted_one_each_is_the_total_not_the_last_events_share():
    # a server without per-event usage that puts the total on its last text event (an MTP server's 6 tokens)
    stream = (completion(" a") + completion(" b")
              + completion(" c", {"prompt_tokens": 4, "completion_tokens": 6}, finish="length")
              + b"data: [DONE]\n\n")
    reader = read(stream)
    assert [r[3] for r in rows(reader)] == [1, 1, 1, 0]
    assert reader.output_tokens == 6 and reader.prompt_tokens == 4 and reader.finished

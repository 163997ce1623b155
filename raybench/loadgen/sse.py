"""The per-request SSE reader: the hot path of the load generator.

Each network read is time-stamped once (every event in it reached the client together), split
into ``data:`` events, and each event is parsed only as far as needed: choices present or not,
text empty or not, the running token count, an error object. Per event the reader appends two
numbers to its own buffers (the time, and the token count and kind packed in one code); the
request's rows join the actor's columns in one C-level copy when the request ends.
"""

from __future__ import annotations

import array
from typing import Any

import orjson

from raybench.loadgen.records import K_DONE, K_EMPTY, K_TOKEN, K_USAGE, ChunkColumns, pack_code

_DONE = b"[DONE]"
_MAX_ERROR_CHARS = 300
_MAX_CHUNK_TOKENS = 32767  # n_tokens is int16 in the chunks table


class StreamError(Exception):
    """The stream broke the OpenAI SSE format; the request ends as ``bad_response``."""


def _text_of(choice: dict[str, Any]) -> Any:
    text = choice.get("text")
    if text is None:
        delta = choice.get("delta") or choice.get("message")
        if delta:
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
    return text


def _calls_tool(choice: dict[str, Any]) -> bool:
    """A chat delta that streams a tool call: tokens without text (no client counts it as text)."""
    delta = choice.get("delta") or choice.get("message")
    return bool(delta and (delta.get("tool_calls") or delta.get("function_call")))


class SseReader:
    """Parses one streamed response into event rows and the request's usage.

    ``tokens`` counts output tokens seen so far: the server's running ``completion_tokens``
    where it sends continuous usage stats, else one per text-bearing event. Once an event was
    counted as one (``counts_events``), a usage that arrives later is the request's total, never
    that event's share: it sets ``output_tokens`` and leaves the events' counts as they are.
    """

    __slots__ = (
        "request_id",
        "t_sent_ns",
        "tokens",
        "t_first_ns",
        "output_tokens",
        "prompt_tokens",
        "cached_tokens",
        "finished",
        "done",
        "counts_events",
        "t_ns",
        "codes",
        "_pending",
    )

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.t_sent_ns: int | None = None  # set just before the request's body is written
        self.tokens = 0
        self.t_first_ns: int | None = None
        self.output_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.finished = False  # a finish_reason was seen
        self.done = False  # [DONE] was seen
        self.counts_events = False  # a token event came without usage: one token per event from then on
        self.t_ns = array.array("q")
        self.codes = array.array("i")  # pack_code(n_tokens, kind) per event
        self._pending = b""

    @property
    def seq(self) -> int:
        """Events read so far."""
        return len(self.t_ns)

    def feed(self, data: bytes, t_ns: int) -> None:
        """Consume one network read that arrived at ``t_ns``; raise StreamError on bad data."""
        if self._pending:
            data = self._pending + data
        if b"\r" in data:
            events = self._split_cr(data)
        else:
            events = data.split(b"\n\n")
            self._pending = events.pop()
        loads = orjson.loads
        t_append, code_append = self.t_ns.append, self.codes.append
        for event in events:
            # fast path: a one-line completion event carrying text and continuous usage
            if event[:7] == b"data: {":
                try:
                    obj = loads(event[6:])
                except orjson.JSONDecodeError:
                    # one event of several lines (data split over lines, a comment or id line) or bad JSON
                    self._event(event, t_ns)
                    continue
                choices = obj.get("choices")
                usage = obj.get("usage")
                if choices and usage and "error" not in obj and not self.counts_events:
                    choice = choices[0]
                    text = choice.get("text")
                    if text is None:
                        text = _text_of(choice)
                    ct = usage.get("completion_tokens")
                    if ct is not None:
                        n = ct - self.tokens
                        self.output_tokens = ct
                        if self.prompt_tokens is None:
                            self._usage(usage)
                        if choice.get("finish_reason") is not None:
                            self.finished = True
                        if n > 0:
                            self.tokens = ct
                            if self.t_first_ns is None:
                                self.t_first_ns = t_ns
                        elif n < 0:
                            raise StreamError(f"completion_tokens went down from {self.tokens} to {ct}")
                        # _add() inlined: this line runs once per streamed token
                        t_append(t_ns)
                        code_append((min(n, _MAX_CHUNK_TOKENS) << 2) | (K_TOKEN if text else K_EMPTY))
                        continue
                self._message(obj, t_ns)
            elif event:
                self._event(event, t_ns)

    def close(self, t_ns: int) -> None:
        """The body ended: a last event without its blank line still counts (as in vLLM)."""
        tail, self._pending = self._pending.strip(), b""
        if tail:
            self._event(tail, t_ns)

    def _split_cr(self, data: bytes) -> list[bytes]:
        """Events of a read whose lines end in CRLF or a lone CR (both are SSE line ends)."""
        # a CRLF split across two reads must end one line, not two: a trailing CR waits for the next read
        held = b"\r" if data[-1:] == b"\r" else b""
        if held:
            data = data[:-1]
        events = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n")
        self._pending = events.pop() + held
        return events

    def _event(self, event: bytes, t_ns: int) -> None:
        if event.startswith(b"data:") and b"\n" not in event:
            payload = event[5:].strip()
        else:
            # comment (keep-alive) lines, id/event/retry fields, a data value over several lines
            payload = self._data_lines(event)
            if payload is None:
                return
        if payload == _DONE:
            self.done = True
            self._add(t_ns, 0, K_DONE)
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            raise StreamError(f"malformed SSE event (not JSON): {payload[:80]!r}") from err
        self._message(obj, t_ns)

    def _data_lines(self, event: bytes) -> bytes | None:
        """Join the ``data:`` lines of a multi-line event; None when it has none (id/event only)."""
        lines = event.split(b"\n")
        data = [ln[5:].strip() for ln in lines if ln.startswith(b"data:")]
        if not data:
            if any(ln and not ln.startswith((b":", b"id:", b"event:", b"retry:")) for ln in lines):
                raise StreamError(f"not an SSE event: {event[:80]!r}")
            return None
        return b"\n".join(data)

    def _message(self, obj: Any, t_ns: int) -> None:
        if not isinstance(obj, dict):
            raise StreamError(f"SSE event is not a JSON object: {str(obj)[:80]}")
        if "error" in obj and not obj.get("choices"):
            raise StreamError(f"error event in stream: {str(obj['error'])[:_MAX_ERROR_CHARS]}")
        usage = obj.get("usage")
        choices = obj.get("choices")
        if not choices:
            if choices is None and usage is None:
                raise StreamError(f"SSE event has neither choices nor usage: {str(obj)[:80]}")
            if usage:
                self._usage(usage)
            self._add(t_ns, 0, K_USAGE)
            return
        choice = choices[0]
        kind = K_TOKEN if _text_of(choice) else K_EMPTY
        if usage and usage.get("completion_tokens") is not None and not self.counts_events:
            n = usage["completion_tokens"] - self.tokens
            if n < 0:
                raise StreamError(f"completion_tokens went down from {self.tokens} to {usage['completion_tokens']}")
            self._usage(usage)
        else:
            n = 1 if kind == K_TOKEN or _calls_tool(choice) else 0
            if n:
                self.counts_events = True
            if usage:
                self._usage(usage)
        if choice.get("finish_reason") is not None:
            self.finished = True
        self._add(t_ns, n, kind)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.output_tokens = usage.get("completion_tokens", self.output_tokens)
        self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        details = usage.get("prompt_tokens_details")
        if details and details.get("cached_tokens") is not None:
            self.cached_tokens = details["cached_tokens"]

    def _add(self, t_ns: int, n_tokens: int, kind: int) -> None:
        if n_tokens > 0:
            self.tokens += n_tokens
            if self.t_first_ns is None:
                self.t_first_ns = t_ns
        self.t_ns.append(t_ns)
        self.codes.append(pack_code(min(n_tokens, _MAX_CHUNK_TOKENS), kind))

    def complete_body(self, obj: Any, t_ns: int) -> None:
        """A non-streamed response: the whole body is one event row."""
        if not isinstance(obj, dict) or not obj.get("choices"):
            raise StreamError(f"response body has no choices: {str(obj)[:80]}")
        usage = obj.get("usage") or {}
        self._usage(usage)
        kind = K_TOKEN if _text_of(obj["choices"][0]) else K_EMPTY
        n = usage.get("completion_tokens")
        n = (1 if kind == K_TOKEN else 0) if n is None else n
        self.finished = self.done = True
        self._add(t_ns, n, kind)

    def flush_into(self, cols: ChunkColumns) -> None:
        """Append this request's event rows to the actor's columns (C-level copies)."""
        count = len(self.t_ns)
        if not count:
            return
        cols.request_id.extend(array.array("Q", (self.request_id,)) * count)
        cols.seq.extend(array.array("i", range(count)))
        cols.t_ns.extend(self.t_ns)
        cols.code.extend(self.codes)
        self.t_ns = array.array("q")
        self.codes = array.array("i")

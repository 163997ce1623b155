"""The per-request SSE reader: the hot path of the load generator.

Each network read is time-stamped once (every event in it reached the client together), split
into ``data:`` events, and each event is parsed only as far as needed: choices present or not,
text empty or not, usage counts, an error object. One row per event goes to the chunk columns.
"""

from __future__ import annotations

from typing import Any

import orjson

from raybench.loadgen.records import K_DONE, K_EMPTY, K_TOKEN, K_USAGE, ChunkColumns

_DONE = b"[DONE]"
_MAX_ERROR_CHARS = 300


class StreamError(Exception):
    """The stream broke the OpenAI SSE format; the request ends as ``bad_response``."""


def _text_of(choice: dict[str, Any]) -> Any:
    text = choice.get("text")
    if text is None:
        delta = choice.get("delta") or choice.get("message")
        if delta:
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
    return text


class SseReader:
    """Parses one streamed response into chunk rows and the request's usage.

    ``tokens`` counts output tokens seen so far: the server's running ``completion_tokens``
    where it sends continuous usage stats, else one per text-bearing event.
    """

    __slots__ = (
        "request_id",
        "seq",
        "tokens",
        "t_first_ns",
        "output_tokens",
        "prompt_tokens",
        "cached_tokens",
        "finished",
        "done",
        "_pending",
    )

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.seq = 0
        self.tokens = 0
        self.t_first_ns: int | None = None
        self.output_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.finished = False  # a finish_reason was seen
        self.done = False  # [DONE] was seen
        self._pending = b""

    def feed(self, data: bytes, t_ns: int, cols: ChunkColumns) -> None:
        """Consume one network read that arrived at ``t_ns``; raise StreamError on bad data."""
        if self._pending:
            data = self._pending + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._pending = events.pop()
        for event in events:
            if event:
                self._event(event, t_ns, cols)

    def close(self, t_ns: int, cols: ChunkColumns) -> None:
        """The body ended: a last event without its blank line still counts (as in vLLM)."""
        tail, self._pending = self._pending.strip(), b""
        if tail:
            self._event(tail, t_ns, cols)

    def _event(self, event: bytes, t_ns: int, cols: ChunkColumns) -> None:
        if event.startswith(b"data:"):
            payload = event[5:].strip()
        elif event.startswith(b":"):
            return  # an SSE comment: keep-alive ping
        else:
            payload = self._data_lines(event)
            if payload is None:
                return
        if payload == _DONE:
            self.done = True
            self._row(t_ns, 0, K_DONE, cols)
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            raise StreamError(f"malformed SSE event (not JSON): {payload[:80]!r}") from err
        if not isinstance(obj, dict):
            raise StreamError(f"SSE event is not a JSON object: {payload[:80]!r}")
        self._message(obj, t_ns, cols)

    def _data_lines(self, event: bytes) -> bytes | None:
        """Join the ``data:`` lines of a multi-line event; None when it has none (id/event only)."""
        lines = [ln[5:].strip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            if any(ln and not ln.startswith((b":", b"id:", b"event:", b"retry:")) for ln in event.split(b"\n")):
                raise StreamError(f"not an SSE event: {event[:80]!r}")
            return None
        return b"\n".join(lines)

    def _message(self, obj: dict[str, Any], t_ns: int, cols: ChunkColumns) -> None:
        if "error" in obj and not obj.get("choices"):
            raise StreamError(f"error event in stream: {str(obj['error'])[:_MAX_ERROR_CHARS]}")
        usage = obj.get("usage")
        choices = obj.get("choices")
        if not choices:
            if choices is None and usage is None:
                raise StreamError(f"SSE event has neither choices nor usage: {str(obj)[:80]}")
            if usage:
                self._usage(usage)
            self._row(t_ns, 0, K_USAGE, cols)
            return
        choice = choices[0]
        kind = K_TOKEN if _text_of(choice) else K_EMPTY
        if usage and usage.get("completion_tokens") is not None:
            n = usage["completion_tokens"] - self.tokens
            self._usage(usage)
        else:
            n = 1 if kind == K_TOKEN else 0
        if choice.get("finish_reason") is not None:
            self.finished = True
        if n > 0:
            self.tokens += n
            if self.t_first_ns is None:
                self.t_first_ns = t_ns
        self._row(t_ns, n, kind, cols)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.output_tokens = usage.get("completion_tokens", self.output_tokens)
        self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        details = usage.get("prompt_tokens_details")
        if details and details.get("cached_tokens") is not None:
            self.cached_tokens = details["cached_tokens"]

    def _row(self, t_ns: int, n_tokens: int, kind: int, cols: ChunkColumns) -> None:
        cols.request_id.append(self.request_id)
        cols.seq.append(self.seq)
        cols.t_ns.append(t_ns)
        cols.n_tokens.append(n_tokens)
        cols.kind.append(kind)
        self.seq += 1

    def complete_body(self, obj: Any, t_ns: int, cols: ChunkColumns) -> None:
        """A non-streamed response: the whole body is one chunk row."""
        if not isinstance(obj, dict) or not obj.get("choices"):
            raise StreamError(f"response body has no choices: {str(obj)[:80]}")
        usage = obj.get("usage") or {}
        self._usage(usage)
        kind = K_TOKEN if _text_of(obj["choices"][0]) else K_EMPTY
        n = usage.get("completion_tokens")
        n = (1 if kind == K_TOKEN else 0) if n is None else n
        self.tokens = n
        self.finished = self.done = True
        if n > 0:
            self.t_first_ns = t_ns
        self._row(t_ns, min(n, 32767), kind, cols)

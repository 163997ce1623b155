"""Response bodies, built once per response shape and cached.

Every response with the same (endpoint, prompt tokens, output tokens, finish reason, k,
stream, usage flags) is byte-for-byte the same, so its whole body is built once (orjson, field
layout of vLLM's OpenAI server) and every timing mode writes slices of it: zero mode writes it
in large pieces, fixed and engine modes write one *step* (the events one engine step releases)
at a time. A stream body is HTTP/1.1 chunked: one HTTP chunk per SSE event, then ``0\\r\\n\\r\\n``.

Steps: the first step carries the chat role chunk (if any) and the first k tokens; the last
carries the last token chunk, the include_usage chunk and ``[DONE]``. A response of n tokens
has ceil(n / k) token events and as many steps.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import orjson

from raybench.sim.api import GenRequest
from raybench.sim.groundtruth import EventKind, EventTable

TOKEN_TEXT = " tok"  # the text of one generated token
PIECE_BYTES = 64 * 1024  # zero mode writes at least this much per transport write (at step ends)
MAX_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True, eq=False)
class ResponsePlan:
    """One cached response body and where its events and steps start."""

    body: bytes
    stream: bool
    output_tokens: int
    events: EventTable
    event_bytes: array  # byte offset of event i; [-1] is len(body) (the terminator rides the last)
    cum_tokens: array  # output tokens in events before i; len = events + 1
    step_events: array  # first event of step j; [-1] = number of events
    pieces: tuple[tuple[int, int], ...]  # zero mode: (first event, end event) per write

    @property
    def num_events(self) -> int:
        return len(self.events.kinds)

    @property
    def num_steps(self) -> int:
        return len(self.step_events) - 1


PlanKey = tuple[bool, int, int, str, int, bool, bool, bool, int]


class PlanCache:
    """Plans by shape, for one served model; evicts oldest entries beyond ``max_bytes``."""

    def __init__(self, model: str, created_s: int, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self._model = model
        self._created = created_s
        self._max_bytes = max_bytes
        self._bytes = 0
        self._plans: dict[PlanKey, ResponsePlan] = {}

    def get(self, req: GenRequest, output_tokens: int, k: int, cached_tokens: int = 0) -> ResponsePlan:
        """``cached_tokens``: prompt tokens the prefix cache served, reported as vLLM's
        ``prompt_tokens_details.cached_tokens`` on the final usage only (the include_usage chunk
        or a whole body), never on continuous-usage chunks, as vLLM does; left out when 0."""
        finish = "length" if output_tokens >= req.max_tokens else "stop"
        key = (req.chat, req.prompt_tokens, output_tokens, finish, k, req.stream,
               req.include_usage, req.continuous_usage, cached_tokens)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build(req, output_tokens, finish, k, cached_tokens)
            while self._plans and self._bytes + len(plan.body) > self._max_bytes:
                oldest = next(iter(self._plans))
                self._bytes -= len(self._plans.pop(oldest).body)
            self._plans[key] = plan
            self._bytes += len(plan.body)
        return plan

    def _build(self, req: GenRequest, n: int, finish: str, k: int, cached: int) -> ResponsePlan:
        if not req.stream:
            body = self._full_body(req, n, finish, cached)
            return ResponsePlan(body=body, stream=False, output_tokens=n,
                                events=EventTable(array("h"), array("b")), event_bytes=array("q", [0, len(body)]),
                                cum_tokens=array("q", [0]), step_events=array("q", [0, 0]), pieces=())
        return _StreamBuilder(self._model, self._created, req, cached).build(n, finish, k)

    def _full_body(self, req: GenRequest, n: int, finish: str, cached: int) -> bytes:
        usage = _usage(req.prompt_tokens, n, cached)
        text = TOKEN_TEXT * n
        if req.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                      "logprobs": None, "finish_reason": finish, "stop_reason": None}
            obj, prefix = "chat.completion", "chatcmpl"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                      "stop_reason": None, "prompt_logprobs": None}
            obj, prefix = "text_completion", "cmpl"
        return orjson.dumps({"id": f"{prefix}-sim", "object": obj, "created": self._created,
                             "model": self._model, "choices": [choice], "usage": usage})


def _usage(prompt: int, completion: int, cached: int = 0) -> dict:
    usage: dict = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


class _StreamBuilder:
    """Assembles the SSE events of one streamed response (see the module docstring)."""

    def __init__(self, model: str, created: int, req: GenRequest, cached: int = 0) -> None:
        self.req = req
        self.cached = cached
        self.header = {"id": "chatcmpl-sim" if req.chat else "cmpl-sim",
                       "object": "chat.completion.chunk" if req.chat else "text_completion",
                       "created": created, "model": model}
        self.parts: list[bytes] = []
        self.event_bytes = array("q")
        self.n_tokens = array("h")
        self.kinds = array("b")
        self.offset = 0

    def _event(self, payload: bytes, n_tokens: int, kind: int) -> None:
        data = b"data: " + payload + b"\n\n"
        framed = b"%x\r\n%b\r\n" % (len(data), data)
        self.event_bytes.append(self.offset)
        self.parts.append(framed)
        self.offset += len(framed)
        self.n_tokens.append(n_tokens)
        self.kinds.append(kind)

    def _chunk(self, choice: dict, usage: dict | None) -> bytes:
        event = dict(self.header, choices=[choice])
        if usage is not None or not self.req.chat:  # completions always carry "usage" (null)
            event["usage"] = usage
        return orjson.dumps(event)

    def build(self, n: int, finish: str, k: int) -> ResponsePlan:
        req = self.req
        step_events = array("q", [0])
        if req.chat:
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}
            usage = _usage(req.prompt_tokens, 0) if req.continuous_usage else None
            self._event(self._chunk(role, usage), 0, EventKind.EMPTY)
        done = 0
        while done < n:
            step = min(k, n - done)
            done += step
            last = done == n
            text = TOKEN_TEXT * step
            if req.chat:
                choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                          "finish_reason": finish if last else None}
                if last:
                    choice["stop_reason"] = None
            else:
                choice = {"index": 0, "text": text, "logprobs": None,
                          "finish_reason": finish if last else None, "stop_reason": None}
            # continuous usage carries no cached_tokens: vLLM sets prompt_tokens_details on the final usage only
            usage = _usage(req.prompt_tokens, done) if req.continuous_usage else None
            self._event(self._chunk(choice, usage), step, EventKind.TOKEN)
            if not last:
                step_events.append(len(self.kinds))
        if req.include_usage:
            final = dict(self.header, choices=[], usage=_usage(req.prompt_tokens, n, self.cached))
            self._event(orjson.dumps(final), 0, EventKind.USAGE)
        self._event(b"[DONE]", 0, EventKind.DONE)
        step_events.append(len(self.kinds))
        self.parts.append(b"0\r\n\r\n")
        body = b"".join(self.parts)
        self.event_bytes.append(len(body))
        cum = array("q", [0])
        for t in self.n_tokens:
            cum.append(cum[-1] + t)
        return ResponsePlan(body=body, stream=True, output_tokens=n, events=EventTable(self.n_tokens, self.kinds),
                            event_bytes=self.event_bytes, cum_tokens=cum, step_events=step_events,
                            pieces=self._pieces(step_events))

    def _pieces(self, step_events: array) -> tuple[tuple[int, int], ...]:
        pieces = []
        start = 0
        for end in step_events[1:]:
            if self.event_bytes[end] - self.event_bytes[start] >= PIECE_BYTES or end == step_events[-1]:
                pieces.append((start, end))
                start = end
        return tuple(pieces)

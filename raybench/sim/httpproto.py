"""A lean HTTP/1.1 server protocol (keep-alive, pipelining, chunked responses).

A general web framework costs tens of microseconds per chunk; in zero-latency mode the
simulator must out-run any client, so requests are parsed by hand on an asyncio Protocol and
responses are written straight to the transport. Request bodies need Content-Length (what
HTTP clients send for JSON); chunked request bodies are refused with 411.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raybench.sim.app import SimApp
    from raybench.sim.streams import Stream

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 2**20
REASONS = {
    100: b"Continue", 200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    411: b"Length Required", 413: b"Content Too Large", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    t_arrival_ns: int  # perf_counter_ns when the request's first bytes were read


class _ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ParseQueue:
    """Connections with unparsed bytes, parsed in slices of at most ``SLICE_NS`` per loop turn.

    Between two slices the loop polls its sockets, so a request that lands while others are
    being parsed is stamped when it lands (within a slice), not when all parsing before it is
    done; and a long queue still drains in a few loop turns.
    """

    SLICE_NS = 100_000

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: collections.deque[HttpConnection] = collections.deque()
        self._scheduled = False

    def push(self, conn: HttpConnection) -> None:
        self._waiting.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._next)

    def _next(self) -> None:
        waiting = self._waiting
        end_ns = perf_counter_ns() + self.SLICE_NS
        try:
            while waiting:
                waiting.popleft().parse_queued()
                if perf_counter_ns() > end_ns:
                    break
        finally:  # a request that raised must not stall the others
            if waiting:
                self._loop.call_soon(self._next)
            else:
                self._scheduled = False


CLOSE_AFTER_DELAY_S = 0.002


class HttpConnection(asyncio.Protocol):
    """One client connection; at most one response in flight, later requests wait in the buffer."""

    def __init__(self, app: SimApp) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.active: Stream | None = None
        self.paused = False  # the transport asked us to stop writing (flow control)
        self.keep_alive = True
        self._buf = bytearray()
        self._head: tuple[str, str, str, dict[str, str], int, int] | None = None
        self._closed = False
        self._held = False  # a stalled response owns the connection until the client leaves
        self._processing = False
        self._continue_sent = False
        self._eof = False  # the client half-closed: finish the response in flight, then close
        self._parse_queued = False
        self._t_start_ns = 0  # first bytes of the request being read
        self._t_data_ns = 0  # the latest read

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.connections.add(self)

    def data_received(self, data: bytes) -> None:
        # A request arrives when its first bytes are read. Parsing waits its turn in the
        # ParseQueue, so when many requests land at once (a client releasing 1024 together)
        # each is stamped when it lands and no arrival carries another request's parse time.
        self._t_data_ns = perf_counter_ns()
        if not self._buf:
            self._t_start_ns = self._t_data_ns
        self._buf += data
        if not self._parse_queued:
            self._parse_queued = True
            self.app.parse_queue.push(self)

    def parse_queued(self) -> None:
        self._parse_queued = False
        self._process()

    def eof_received(self) -> bool:
        self._eof = True
        return self.active is not None  # keep the write side open while a response streams

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.active is not None:
            self.app.resume(self.active)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.app.connections.discard(self)
        active, self.active = self.active, None
        if active is not None:
            active.lost()

    # -- used by the app and streams ----------------------------------------------------------
    def head(self, status: int, content_type: bytes, length: int | None = None,
             extra: tuple[bytes, ...] = ()) -> bytes:
        """Status line and headers; length None means a chunked body."""
        lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Unknown")), b"content-type: " + content_type]
        lines.append(b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length)
        if not self.keep_alive:
            lines.append(b"connection: close")
        lines.extend(extra)
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def respond(self, status: int, body: bytes, content_type: bytes = b"application/json",
                extra: tuple[bytes, ...] = (), close: bool = False) -> None:
        """A whole response with a Content-Length body; then the next request (or close)."""
        if close:
            self.keep_alive = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines([self.head(status, content_type, len(body), extra), body])
        self.response_done()

    def start(self, stream: Stream) -> None:
        self.active = stream

    def response_done(self) -> None:
        self.active = None
        if not self.keep_alive or self._eof:
            self.close()
        elif self._buf:
            self._process()

    def close_after_response(self) -> None:
        """Close a moment after a complete response, without having said so in its headers.

        The delay is what makes the fault bite: a client that reused the connection at once
        has written its next request by the time the connection closes, and gets no answer.
        """
        self.active = None
        self._held = True  # requests that arrive now are never answered
        loop = asyncio.get_running_loop()
        loop.call_later(CLOSE_AFTER_DELAY_S, self.close)

    def hold(self) -> None:
        """Stop answering on this connection but keep it open (the stall fault)."""
        self.active = None
        self._held = True

    def close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()

    # -- parsing -------------------------------------------------------------------------------
    def _process(self) -> None:
        if self._processing:
            return  # a response finished inside handle(); the loop below picks up the next one
        self._processing = True
        try:
            while self.active is None and not self._closed and not self._held:
                try:
                    request = self._parse()
                except _ProtocolError as err:
                    self.keep_alive = False
                    self.respond(err.status, self.app.error_json(err.status, str(err)), close=True)
                    return
                if request is None:
                    return
                try:
                    self.app.handle(self, request)
                except Exception as err:  # a simulator bug: answer it rather than drop the line
                    if self.active is None:
                        self.respond(500, self.app.error_json(500, f"simulator error: {err!r}"), close=True)
                    else:
                        self.abort()
                    raise
        finally:
            self._processing = False

    def _parse(self) -> HttpRequest | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise _ProtocolError(431, "request head too large")
                return None
            self._head = self._parse_head(bytes(buf[:end]).decode("latin-1"), end + 4)
        method, path, query, headers, start, length = self._head
        if len(buf) < start + length:
            if not self._continue_sent and headers.get("expect", "").lower() == "100-continue":
                self._continue_sent = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self._head = None
        self._continue_sent = False
        # bytes left in the buffer belong to a pipelined request that came with the last read
        t_arrival_ns, self._t_start_ns = self._t_start_ns, self._t_data_ns
        return HttpRequest(method, path, query, headers, body, t_arrival_ns)

    def _parse_head(self, head: str, start: int) -> tuple[str, str, str, dict[str, str], int, int]:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _ProtocolError(400, f"bad request line {lines[0][:100]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _ProtocolError(400, f"bad header line {line[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _ProtocolError(411, "chunked request bodies are not supported; send Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _ProtocolError(400, "bad Content-Length") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise _ProtocolError(413, f"request body over {MAX_BODY_BYTES} bytes")
        path, _, query = target.partition("?")
        return method, path, query, headers, start, length

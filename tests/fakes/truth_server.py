"""An independent ground-truth server for the client's timing: none of raybench's code in it.

A plain asyncio HTTP/1.1 server that streams OpenAI-style completions at a fixed TTFT and ITL
and logs, per request, when the request reached its socket and when it wrote the first token.
The client's TTFT is checked against the difference of these two, so a slow ground truth (one
that stamps after its own parsing and task switching) cannot pass for a slow client, and the
other way round.

The receipt is the kernel's receive time stamp of the request's bytes (SO_TIMESTAMPNS, read
with recvmsg), not the time this process's loop got round to reading them: with 128 streams
in lockstep the loop writes 128 events in one turn every ITL, a request arriving meanwhile
waits there for up to milliseconds, and that wait is the server's (its queue), not the
client's. The loop's own read time is logged beside it, so the wait can be shown.

    python tests/fakes/truth_server.py [--ttft-ms 200] [--itl-ms 20]   # prints "PORT <n>"

GET /v1/models lists one model; POST /v1/completions streams ``max_tokens`` tokens (one per
event, continuous usage, finish_reason on the last, then a usage event and [DONE]);
GET /truth returns the log as JSON rows [x-request-id, t_receipt_ns, t_first_write_ns,
t_loop_read_ns]; POST /truth/reset empties it. Times are this process's perf_counter_ns
(CLOCK_MONOTONIC); kernel stamps (CLOCK_REALTIME) are moved onto it at each read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import struct
import sys
import time
from time import perf_counter_ns

MODEL = "truth-model"
SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); the control message it brings has the same number
_MAX_TOKENS = re.compile(rb'"max_tokens":\s*(\d+)')


class TruthLog:
    def __init__(self) -> None:
        self.rows: list[list] = []


class Connection:
    """One client connection, read with recvmsg (for the kernel's time stamps) and written directly."""

    def __init__(self, sock: socket.socket, log: TruthLog, ttft_ns: int, itl_ns: int) -> None:
        self.sock, self.log, self.ttft_ns, self.itl_ns = sock, log, ttft_ns, itl_ns
        self.buf = b""
        self.out = b""  # what the socket did not take yet
        self.closed = False
        self.t_receipt_ns: int | None = None
        self.t_loop_read_ns: int | None = None
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.loop.add_reader(sock, self.readable)

    def readable(self) -> None:
        t_loop = perf_counter_ns()
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self.close()
            return
        if self.t_receipt_ns is None:
            self.t_receipt_ns, self.t_loop_read_ns = _kernel_stamp(ancillary, t_loop), t_loop
        self.buf += data
        self.process()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self.out = data[sent:]
            self.loop.add_writer(self.sock, self.writable)

    def writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.loop.remove_writer(self.sock)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock)
            self.loop.remove_writer(self.sock)
            self.sock.close()

    def process(self) -> None:
        while (head_end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = self.buf[:head_end].decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            end = head_end + 4 + int(headers.get("content-length", "0"))
            if len(self.buf) < end:
                return  # the rest comes with a later read, which calls process() again
            body, self.buf = self.buf[head_end + 4:end], self.buf[end:]
            t_receipt, t_loop_read = self.t_receipt_ns, self.t_loop_read_ns
            # a pipelined request's bytes came with this one's
            self.t_receipt_ns, self.t_loop_read_ns = (t_receipt, t_loop_read) if self.buf else (None, None)
            self.handle(method, path, headers, body, t_receipt, t_loop_read)

    def reply_json(self, obj: object) -> None:
        payload = json.dumps(obj).encode()
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )

    def handle(self, method: str, path: str, headers: dict, body: bytes, t_receipt: int, t_loop_read: int) -> None:
        if method == "GET" and path == "/v1/models":
            self.reply_json({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif method == "GET" and path == "/truth":
            self.reply_json(self.log.rows)
        elif method == "POST" and path == "/truth/reset":
            self.log.rows.clear()
            self.reply_json({})
        elif method == "POST" and path == "/v1/completions":
            # no JSON parsing of a 20 KB prompt here: a server busy parsing one request stamps
            # the next one late, and that delay would be its own, not the client's
            max_tokens = int(_MAX_TOKENS.search(body).group(1))
            prompt_tokens = body.count(b",", body.find(b'"prompt"'), body.find(b"]")) + 1
            row = [headers.get("x-request-id", ""), t_receipt, None, t_loop_read]
            self.log.rows.append(row)
            # headers at once, as Starlette's StreamingResponse sends them; tokens on a fixed clock
            self.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            self.stream(row, max_tokens, prompt_tokens, t_receipt)
        else:
            self.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def stream(self, row: list, max_tokens: int, prompt_tokens: int, t_receipt: int) -> None:
        loop_now_ns = perf_counter_ns()
        base = self.loop.time() - (loop_now_ns - t_receipt) / 1e9  # t_receipt on the loop's clock

        def event(k: int) -> None:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": k + 1, "total_tokens": prompt_tokens + k + 1}
            choice = {"index": 0, "text": f" t{k}", "finish_reason": "length" if k + 1 == max_tokens else None}
            data = b"data: " + json.dumps({"object": "text_completion", "choices": [choice], "usage": usage}).encode() + b"\n\n"
            if k + 1 == max_tokens:
                tail = {"object": "text_completion", "choices": [], "usage": usage}
                data += b"data: " + json.dumps(tail).encode() + b"\n\ndata: [DONE]\n\n"
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            if k + 1 == max_tokens:
                frame += b"0\r\n\r\n"
            if k == 0:
                row[2] = perf_counter_ns()
            self.write(frame)
            if k + 1 < max_tokens and not self.closed:
                self.loop.call_at(base + (self.ttft_ns + (k + 1) * self.itl_ns) / 1e9, event, k + 1)

        self.loop.call_at(base + self.ttft_ns / 1e9, event, 0)


def _kernel_stamp(ancillary: list, t_loop_ns: int) -> int:
    """The kernel's receive time of the bytes just read, on perf_counter's clock (else the loop's read time)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            realtime_minus_perf = time.clock_gettime_ns(time.CLOCK_REALTIME) - perf_counter_ns()
            return min(sec * 1_000_000_000 + nsec - realtime_minus_perf, t_loop_ns)
    return t_loop_ns


async def serve(ttft_ms: float, itl_ms: float) -> None:
    log = TruthLog()
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    connections: set[Connection] = set()

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            connections.add(Connection(sock, log, int(ttft_ms * 1e6), int(itl_ms * 1e6)))
            connections.difference_update([c for c in connections if c.closed])

    loop.add_reader(listener, accept)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.ttft_ms, args.itl_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""An independent ground-truth server for the client's timing: none of raybench's code in it.

A plain asyncio HTTP/1.1 server that streams OpenAI-style completions at a fixed TTFT and ITL
and logs, per request, when the request's first bytes reached it (read at the socket, before
any parsing) and when it wrote the first token. The client's TTFT is checked against the
difference of these two, so a slow ground truth (one that stamps after its own parsing and
task switching) cannot pass for a slow client, and the other way round.

    python tests/fakes/truth_server.py [--ttft-ms 200] [--itl-ms 20]   # prints "PORT <n>"

GET /v1/models lists one model; POST /v1/completions streams ``max_tokens`` tokens (one per
event, continuous usage, finish_reason on the last, then a usage event and [DONE]);
GET /truth returns the log as JSON rows [x-request-id, t_receipt_ns, t_first_write_ns];
POST /truth/reset empties it. Times are this process's perf_counter_ns (CLOCK_MONOTONIC).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from time import perf_counter_ns

MODEL = "truth-model"
_MAX_TOKENS = re.compile(rb'"max_tokens":\s*(\d+)')


class TruthLog:
    def __init__(self) -> None:
        self.rows: list[list] = []


class Connection(asyncio.Protocol):
    def __init__(self, log: TruthLog, ttft_ns: int, itl_ns: int) -> None:
        self.log, self.ttft_ns, self.itl_ns = log, ttft_ns, itl_ns
        self.buf = b""
        self.scheduled = False
        self.t_receipt_ns: int | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.t_receipt_ns is None:
            self.t_receipt_ns = perf_counter_ns()
        # parse on the next loop turn: every socket that became readable with this one gets its
        # stamp first, instead of after the parsing of all the requests read before it
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.process)
        self.buf += data

    def process(self) -> None:
        self.scheduled = False
        while (head_end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = self.buf[:head_end].decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            end = head_end + 4 + int(headers.get("content-length", "0"))
            if len(self.buf) < end:
                return  # the rest comes with a later read, which schedules process() again
            body, self.buf = self.buf[head_end + 4:end], self.buf[end:]
            t_receipt, self.t_receipt_ns = self.t_receipt_ns, (perf_counter_ns() if self.buf else None)
            self.handle(method, path, headers, body, t_receipt)

    def reply_json(self, obj: object) -> None:
        payload = json.dumps(obj).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )

    def handle(self, method: str, path: str, headers: dict, body: bytes, t_receipt: int) -> None:
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
            row = [headers.get("x-request-id", ""), t_receipt, None]
            self.log.rows.append(row)
            # headers at once, as Starlette's StreamingResponse sends them; tokens on a fixed clock
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            self.stream(row, max_tokens, prompt_tokens, t_receipt)
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

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
            self.transport.write(frame)
            if k + 1 < max_tokens:
                self.loop.call_at(base + (self.ttft_ns + (k + 1) * self.itl_ns) / 1e9, event, k + 1)

        self.loop.call_at(base + self.ttft_ns / 1e9, event, 0)


async def serve(ttft_ms: float, itl_ms: float) -> None:
    log = TruthLog()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(log, int(ttft_ms * 1e6), int(itl_ms * 1e6)), "127.0.0.1", 0, backlog=4096
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


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

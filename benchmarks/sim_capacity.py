"""How fast can the zero-latency simulator stream? (not a test; run it by hand)

Starts ``python -m raybench.sim --timing zero`` in its own process, drives it with a lean raw
asyncio client (no SSE parsing: it only waits for the end of each chunked body) at a fixed
concurrency, and reports the sim side from its /sim/stats counters and CPU time:

    .venv/bin/python benchmarks/sim_capacity.py --concurrency 128 --input 128 --output 1000

The figure that matters is "sim CPU-s per 1M tokens": 1e6 / that is the token rate one core
of simulator can stream, whatever the client manages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TERMINATOR = b"\r\n0\r\n\r\n"


class _LeanClient(asyncio.Protocol):
    """Sends one request at a time on a keep-alive connection; counts finished responses."""

    def __init__(self, request: bytes, deadline: float, done: asyncio.Future, counters: dict) -> None:
        self.request, self.deadline, self.done, self.counters = request, deadline, done, counters
        self.tail = b""

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.counters["bytes"] += len(data)
        tail = self.tail + data[-16:]
        if tail.endswith(TERMINATOR):
            self.counters["responses"] += 1
            self.tail = b""
            if time.perf_counter() < self.deadline:
                self.transport.write(self.request)
            elif not self.done.done():
                self.done.set_result(None)
                self.transport.close()
        else:
            self.tail = tail[-16:]

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


def _request_bytes(port: int, i: int, input_len: int, output_len: int) -> bytes:
    body = json.dumps({
        "model": "deepseek-ai/DeepSeek-R1", "prompt": list(range(1000, 1000 + input_len)),
        "max_tokens": output_len, "min_tokens": output_len, "ignore_eos": True, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Request-Id: bench-{i}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/stats", timeout=10) as resp:
        return json.loads(resp.read())


async def _drive(port: int, args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    counters = {"bytes": 0, "responses": 0}
    deadline = time.perf_counter() + args.seconds
    futures = []
    for i in range(args.concurrency):
        fut = loop.create_future()
        request = _request_bytes(port, i, args.input, args.output)
        await loop.create_connection(lambda r=request, f=fut: _LeanClient(r, deadline, f, counters),
                                     "127.0.0.1", port)
        futures.append(fut)
    await asyncio.gather(*futures)
    return counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--output", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    args = parser.parse_args()
    ready = Path(tempfile.mkdtemp()) / "port"
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "raybench.sim", "--timing", "zero", "--ready-file", str(ready),
         "--tokens-per-chunk", str(args.tokens_per_chunk)],
        cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)), stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.05)
        port = int(ready.read_text())
        before = _stats(port)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            import uvloop

            counters = uvloop.run(_drive(port, args))
        except ImportError:
            counters = asyncio.run(_drive(port, args))
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - c0
        after = _stats(port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    events = after["events_written"] - before["events_written"]
    tokens = after["tokens_written"] - before["tokens_written"]
    sim_cpu = after["process_cpu_s"] - before["process_cpu_s"]
    print(f"concurrency {args.concurrency}, input {args.input}, output {args.output}, "
          f"k {args.tokens_per_chunk}, {wall:.1f} s, {counters['responses']} responses, "
          f"{counters['bytes'] / wall / 1e6:.0f} MB/s")
    print(f"sim-side chunks/s:          {events / wall:,.0f}")
    print(f"sim-side tokens/s:          {tokens / wall:,.0f}")
    print(f"sim CPU use:                {sim_cpu / wall:.2f} cores")
    print(f"sim CPU-s per 1M tokens:    {sim_cpu / tokens * 1e6:.3f}  "
          f"(=> {tokens / sim_cpu:,.0f} tokens/s per sim core)")
    print(f"client CPU-s per 1M tokens: {client_cpu / tokens * 1e6:.3f}")


if __name__ == "__main__":
    main()

"""How fast can the zero-latency simulator stream? (not a test; run it by hand)

Starts ``python -m raybench.sim --timing zero`` in its own process, drives it with a lean raw
asyncio client (no SSE parsing: it only waits for the end of each chunked body) at a fixed
concurrency, and reports the sim side from its /sim/stats counters and CPU time:

    .venv/bin/python benchmarks/sim_capacity.py --concurrency 128 --input 128 --output 1000

The figure that matters is "sim CPU-s per 1M tokens": 1e6 / that is the token rate one core
of simulator can stream, whatever the client manages. With ``--timing fixed`` it also reports
how late the sim wrote each token chunk against its deadline, from its own ground truth:

    .venv/bin/python benchmarks/sim_capacity.py --timing fixed --concurrency 1024 --output 200
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

    def __init__(self, make_request, deadline: float, done: asyncio.Future, counters: dict) -> None:
        self.make_request, self.deadline, self.done, self.counters = make_request, deadline, done, counters
        self.tail = b""

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.make_request())

    def data_received(self, data: bytes) -> None:
        self.counters["bytes"] += len(data)
        tail = self.tail + data[-16:]
        if tail.endswith(TERMINATOR):
            self.counters["responses"] += 1
            self.tail = b""
            if time.perf_counter() < self.deadline:
                self.transport.write(self.make_request())
            elif not self.done.done():
                self.done.set_result(None)
                self.transport.close()
        else:
            self.tail = tail[-16:]

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


def _request_factory(port: int, i: int, input_len: int, output_len: int):
    """Request bytes with a fresh X-Request-Id each time (the ground truth is keyed by it)."""
    body = json.dumps({
        "model": "deepseek-ai/DeepSeek-R1", "prompt": list(range(1000, 1000 + input_len)),
        "max_tokens": output_len, "min_tokens": output_len, "ignore_eos": True, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: bench-{i}-").encode()
    sent = 0

    def make() -> bytes:
        nonlocal sent
        sent += 1
        return b"%b%d\r\n\r\n%b" % (head, sent, body)

    return make


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
        make = _request_factory(port, i, args.input, args.output)
        await loop.create_connection(lambda m=make, f=fut: _LeanClient(m, deadline, f, counters),
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
    parser.add_argument("--timing", choices=["zero", "fixed"], default="zero",
                        help="fixed: also report how late the sim wrote each chunk against its deadline")
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    args = parser.parse_args()
    ready = Path(tempfile.mkdtemp()) / "port"
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "raybench.sim", "--timing", args.timing, "--ready-file", str(ready),
         "--tokens-per-chunk", str(args.tokens_per_chunk), "--ttft-ms", str(args.ttft_ms),
         "--itl-ms", str(args.itl_ms)],
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
        lateness = _lateness_ms(port, args) if args.timing == "fixed" else None
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
    if lateness is not None:
        p50, p99, worst = lateness
        print(f"sim lateness vs deadline:   p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms")


def _lateness_ms(port: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """Per token chunk: sim write time minus arrival + ttft + j * itl * k, from the ground truth."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def table(name):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/ground_truth?table={name}", timeout=60) as resp:
            return pa.ipc.open_stream(resp.read()).read_all()

    chunks, requests = table("chunks"), table("requests")
    chunks = chunks.filter(pc.equal(chunks["kind"], "token"))
    arrival = dict(zip(requests["request_key"].to_pylist(), requests["t_arrival_ns"].to_pylist()))
    keys = chunks["request_key"].to_pylist()
    t_ns = chunks["t_ns"].to_numpy()
    seq = chunks["seq"].to_numpy()  # completions: token event j has seq j
    t_arrival = np.array([arrival.get(k, -1) for k in keys])
    done = t_arrival >= 0
    due = t_arrival + (args.ttft_ms + seq * args.itl_ms * args.tokens_per_chunk) * 1e6
    late = (t_ns - due)[done] / 1e6
    return float(np.percentile(late, 50)), float(np.percentile(late, 99)), float(late.max())


if __name__ == "__main__":
    main()

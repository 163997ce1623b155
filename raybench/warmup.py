"""The warm-up before a cell: a few short requests that stop the cell with one line when they fail.

A server that rejects raybench's requests (an unknown field, an out-of-vocabulary id) says so
here, before the cell's load starts, with a hint at the flag that fixes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import numpy as np

from raybench.errors import BackendError
from raybench.experiment import WARMUP_MAX_TOKENS
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.prompting import oov_hint
from raybench.redaction import redact_text
from raybench.workloads import Workload

Report = Callable[[str], None]


def warm_up(client: ClientConfig, workload: Workload, num_requests: int, *, report: Report | None = None,
            no_answer_hint_s: float | None = 60.0) -> None:
    """Send a few short requests first; a server that rejects them stops the cell with one line.

    A server that does not answer gets a line every ``no_answer_hint_s`` naming the timeouts,
    rather than an hour of silence (the request timeout's default).
    """
    if num_requests <= 0:
        return
    specs = [dataclasses.replace(s, max_tokens=min(s.max_tokens, WARMUP_MAX_TOKENS)) for s in workload.build(range(min(num_requests, workload.num_requests)))]
    generator = LoadGenerator(cell_id="warmup", client=client, specs=specs, arrivals_s=np.zeros(len(specs)), concurrency=len(specs))
    asyncio.run(_run_telling(generator, client.url, report if no_answer_hint_s else None, no_answer_hint_s or 0.0))
    _, requests = generator.drain()
    for code, error in zip(requests.status, requests.error):
        if code != 0:
            raise BackendError(f"warm-up request to {client.url} failed: {error}{_hint(error or '') or oov_hint(error or '', workload)}")


async def _run_telling(generator: LoadGenerator, url: str, report: Report | None, every_s: float) -> None:
    task = asyncio.ensure_future(generator.run(time.perf_counter_ns()))
    waited_s = 0.0
    while True:
        done, _ = await asyncio.wait({task}, timeout=every_s if report is not None else None)
        if done:
            return task.result()
        waited_s += every_s
        report(redact_text(f"  warm-up: no answer from {url} for {waited_s:g} s: see --stall-timeout, --request-timeout"))


def _hint(error: str) -> str:
    for field, flag in (
        ("min_tokens", "--no-min-tokens"),
        ("ignore_eos", "--no-ignore-eos"),
        ("continuous_usage_stats", "--no-continuous-usage"),
        ("stream_options", "--no-usage"),
    ):
        if field in error:
            return f" (the server may not accept {field}: try {flag})"
    return ""

"""A 200 without output is not a success, and output short of a forced length is flagged.

The answers come from tests/fakes/hollow_server.py; the analysis then must print no latency it
did not measure (n/a, null) and count the short requests.
"""

import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from raybench.analysis.metrics import request_metrics
from raybench.analysis.summary import format_summary_table, summarize_cell
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.loadgen.records import chunks_batch, requests_batch
from raybench.workloads import RandomWorkload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import hollow_server  # noqa: E402


async def _run(mode: str, *, n: int = 4, output_len: int = 10, **client_kw):
    runner, url = await hollow_server.start(mode)
    try:
        client = ClientConfig(base_url=url, model="m", request_timeout_s=10, **client_kw)
        specs = RandomWorkload(num_prompts=n, input_len=4, output_len=output_len).build(range(n))
        gen = LoadGenerator(cell_id="c", client=client, specs=specs, arrivals_s=np.zeros(n), concurrency=n)
        await gen.run(time.perf_counter_ns())
        chunks, requests = gen.drain()
    finally:
        await runner.cleanup()
    req = pl.from_arrow(pa.Table.from_batches([requests_batch(requests, "c", "a", "n", 0)]))
    chk = pl.from_arrow(pa.Table.from_batches([chunks_batch(chunks, "c", 0)])) if len(chunks) else None
    return req, chk


@pytest.mark.parametrize("mode, client_kw", [("done_only", {}), ("empty_text", {}), ("empty_body", {"stream": False})])
async def test_a_200_with_no_output_token_is_a_bad_response(mode, client_kw):
    req, chk = await _run(mode, **client_kw)
    assert req["status"].cast(pl.String).to_list() == ["bad_response"] * 4
    assert all("answered 200 but sent no output token" in e for e in req["error"].to_list())
    from raybench.store.schema import CHUNKS_SCHEMA

    chunks = chk if chk is not None else pl.from_arrow(CHUNKS_SCHEMA.empty_table())
    s = summarize_cell(req, chunks, target_concurrency=4, forced_output_len=True)
    assert (s["completed"], s["failed_bad_response"], s["total_output_tokens"]) == (0, 4, 0)
    assert (s["count_ttft"], s["median_ttft_ms"], s["mean_itl_ms"]) == (0, None, None)
    table = format_summary_table(s)
    assert re.search(r"^Successful requests:\s+0\s*$", table, re.MULTILINE)
    assert re.search(r"^Median TTFT \(ms\):\s+n/a\s*$", table, re.MULTILINE), table


async def test_output_short_of_the_forced_length_is_flagged_and_counted():
    req, chk = await _run("short", n=3, output_len=10)
    assert req["status"].cast(pl.String).to_list() == ["ok"] * 3
    s = summarize_cell(req, chk, target_concurrency=3, forced_output_len=True)
    assert (s["forced_output_len"], s["short_output_requests"]) == (True, 3)
    assert s["short_output_request_ids"] == [0, 1, 2]
    per_request = request_metrics(req, chk)
    assert per_request["short_output"].to_list() == [True] * 3  # the flag, request by request
    assert re.search(r"^Short of forced output length:\s+3\s*$", format_summary_table(s), re.MULTILINE)
    # nothing was forced: two tokens for ten asked is the server's to decide, not a flag
    unforced = summarize_cell(req, chk, target_concurrency=3, forced_output_len=False)
    assert unforced["short_output_requests"] is None
    assert "Short of forced" not in format_summary_table(unforced)

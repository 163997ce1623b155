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


def test_a_run_warns_about_short_outputs_and_refuses_a_hollow_warm_up(ray_local, tmp_path):
    """Through the runner: the warning line, the summary's count; an empty warm-up stops the cell."""
    import asyncio
    import threading

    from raybench.errors import BackendError
    from raybench.experiment import Experiment, ExternalBackend, Online
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    def serve(mode):
        loop = asyncio.new_event_loop()
        runner, url = loop.run_until_complete(hollow_server.start(mode))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        def stop():
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
        return url, stop

    sweep = Online(concurrency=(2,), input_len=4, output_len=10, num_prompts=4)
    url, stop = serve("short")
    try:
        experiment = Experiment(name="short", model="m", backends=(ExternalBackend(name="x", url=url),),
                                online=(sweep,), warmup_requests=0)
        lines = []
        [summary] = Runner(experiment, RunDir.create(tmp_path, "short"), RunOptions(), report=lines.append).run()
        assert summary["outcome"] == "complete" and summary["short_output_requests"] == 4
        assert any(line.startswith("WARNING cell x-online-c2-i4-o10: 4 successful requests stopped short of the "
                                   "forced output length") for line in lines), lines
    finally:
        stop()
    url, stop = serve("done_only")
    try:
        experiment = Experiment(name="hollow", model="m", backends=(ExternalBackend(name="x", url=url),),
                                online=(sweep,), warmup_requests=1)
        with pytest.raises(BackendError, match="warm-up request to .* failed: the server answered 200 but sent "
                                               "no output token"):
            Runner(experiment, RunDir.create(tmp_path, "hollow"), RunOptions(), report=[].append).run()
    finally:
        stop()

"""TTFT at the first burst of a closed-loop cell, against a server that is not raybench's.

``tests/fakes/truth_server.py`` is a plain asyncio server (TTFT 200 ms, ITL 20 ms) that stamps
each request's arrival with the kernel's receive time and its first token's write. 256 requests at
concurrency 128 go through raybench's runner (the warm-up request left out): the first 128
leave at once, the rest as slots free up. The client's TTFT (first token - t_sent) may differ
from the server's (first write - receipt) only by the two trips over loopback, and by whatever
the client adds. The limit is a client property, but a machine whose cores are taken by others,
or a VM that stalls every process for 20-40 ms now and then (benchmarks/trace_send_timing.py
measures it), delays both processes and shows up here: the best of three runs must meet it,
and every run must stamp no TTFT shorter than the server's.
"""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from raybench.experiment import Experiment, ExternalBackend, Online
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir

SERVER = Path(__file__).resolve().parents[1] / "fakes" / "truth_server.py"
CONCURRENCY, NUM_PROMPTS = 128, 256


@pytest.fixture(scope="module")
def truth_server():
    proc = subprocess.Popen([sys.executable, str(SERVER), "--ttft-ms", "200", "--itl-ms", "20"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    yield f"http://127.0.0.1:{int(line.split()[1])}"
    proc.terminate()
    proc.wait(timeout=10)


def truth(url):
    with urllib.request.urlopen(url + "/truth", timeout=30) as r:
        rows = [row for row in json.load(r) if not row[0].startswith("warmup")]
    return pl.DataFrame(rows, schema=["key", "t_receipt_ns", "t_write_ns", "t_loop_read_ns"], orient="row")


def burst_errors(url, tmp_path):
    """One cell through the runner; per request the client's TTFT minus the server's (ms)."""
    urllib.request.urlopen(urllib.request.Request(url + "/truth/reset", method="POST"), timeout=30).close()
    experiment = Experiment(
        name="burst", model="truth-model", backends=(ExternalBackend(name="truth", url=url),),
        online=(Online(concurrency=(CONCURRENCY,), input_len=3200, output_len=20, num_prompts=NUM_PROMPTS),),
    )
    rd = RunDir.create(tmp_path, "burst")
    [summary] = Runner(experiment, rd, RunOptions(), report=lambda _: None).run()
    requests = pl.read_parquet(rd.cell_dir(summary["cell_id"]) / "requests.parquet")
    return (
        requests.filter(pl.col("status") == "ok")
        .with_columns(key=pl.concat_str([pl.col("cell_id"), pl.lit("-"), pl.col("request_id").cast(pl.Utf8)]))
        .join(truth(url), on="key")
        .with_columns(
            err_ms=((pl.col("t_first_ns") - pl.col("t_sent_ns")) - (pl.col("t_write_ns") - pl.col("t_receipt_ns"))) / 1e6
        )
    )


@pytest.mark.slow
def test_mean_ttft_error_at_the_first_burst_is_under_2_ms(ray_local, tmp_path, truth_server):
    means = []
    for attempt in range(3):
        rows = burst_errors(truth_server, tmp_path / f"a{attempt}")
        assert rows.height == NUM_PROMPTS  # every request answered, matched, and no warm-up among them
        burst = rows.filter(pl.col("request_id") < CONCURRENCY)["err_ms"].mean()
        rest = rows.filter(pl.col("request_id") >= CONCURRENCY)["err_ms"].mean()
        read_wait = ((rows["t_loop_read_ns"] - rows["t_receipt_ns"]) / 1e6).mean()
        print(f"\nrun {attempt + 1}: TTFT error (ms): mean {rows['err_ms'].mean():.3f}, first burst {burst:.3f}, "
              f"rest {rest:.3f}; max {rows['err_ms'].max():.3f}; the server's loop read requests {read_wait:.3f} ms "
              f"after the kernel had them; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        # the client's TTFT is never shorter than the server's: a negative error is a stamping bug
        assert rows["err_ms"].min() > -0.05
        means.append(rows["err_ms"].mean())
        if means[-1] < 2.0:
            break
    assert min(means) < 2.0, means

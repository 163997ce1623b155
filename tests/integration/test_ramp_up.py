"""Ramp-up on the simulator: the rate's schedule, and a concurrency cap that opens slot by slot."""

import json

import numpy as np
import polars as pl
from click.testing import CliRunner

from raybench.cli import main


def bench(tmp_path, *args):
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--sim-timing", "fixed", "--input-len", "16",
                                       "--no-report", "--out", str(tmp_path), *args], catch_exceptions=False)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    [cell] = list(tmp_path.glob("bench/*/cells/*"))
    return json.loads((cell / "summary.json").read_text()), pl.read_parquet(cell / "requests.parquet")


def test_a_linear_rate_ramp_is_the_schedule_sent(ray_local, tmp_path):
    summary, requests = bench(tmp_path, "--num-prompts", "60", "--request-rate", "60", "--burstiness", "1e9",
                              "--ramp-up-strategy", "linear", "--ramp-up-start", "10", "--output-len", "2",
                              "--sim-ttft-ms", "2", "--sim-itl-ms", "1", "--actors", "2")
    assert summary["cell_id"].endswith("-r60-lin10") and requests.height == 60
    scheduled = np.sort(requests["t_scheduled_ns"].to_numpy())
    gaps_s = np.diff(scheduled) / 1e9
    expected = [1 / (10 + 50 * i / 59) for i in range(1, 60)]
    np.testing.assert_allclose(gaps_s, expected, rtol=1e-3)  # burstiness 1e9: gamma gaps all but exact


def test_a_concurrency_ramp_opens_slots_over_its_duration(ray_local, tmp_path):
    summary, requests = bench(tmp_path, "--num-prompts", "400", "--concurrency", "8", "--ramp-up-strategy", "linear",
                              "--ramp-up-start", "1", "--ramp-up-duration", "2", "--output-len", "10",
                              "--sim-ttft-ms", "5", "--sim-itl-ms", "5", "--actors", "2")
    assert requests.height == 400 and summary["completed"] == 400
    # from the cell's start (every request is due then; slots open later): a first send that left
    # late on a stalled machine moves sends later, out of the windows below, never into them
    t0 = requests["t_scheduled_ns"].min()
    events = sorted([(t - t0, 1) for t in requests["t_sent_ns"]] + [(t - t0, -1) for t in requests["t_done_ns"]],
                    key=lambda e: (e[0], e[1]))
    times = np.array([t for t, _ in events]) / 1e9
    in_flight = np.cumsum([d for _, d in events])
    # slot k opens at 2 * k / 7 s: one request in flight at first, eight once the ramp is over
    assert in_flight[times < 0.25].max() <= 1
    assert in_flight[times < 1.0].max() <= 4
    assert in_flight.max() == 8

"""Live view on a Ray cluster started with metrics export: Ray's Prometheus endpoint carries
raybench's series with their tags and exact counts, the server-metrics timeline follows the
simulator second by second, and the runner prints progress and a final table."""

import re
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import ray

from raybench import cluster as rb_cluster
from raybench.experiment import Experiment, Online, SimBackend
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir
from raybench.telemetry.progress import ProgressDisplay
from raybench.telemetry.server_metrics import SERVER_METRICS_FILE

NUM_PROMPTS, OUTPUT_LEN, CONCURRENCY = 20, 100, 8
DASHBOARD = Path(__file__).parents[2] / "dashboards" / "raybench.json"
_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rb_cluster.disconnect()  # one Ray connection per process: this module brings its own cluster
    port = free_port()
    ray.init(address="local", namespace="raybench", num_cpus=4, include_dashboard=False,
             _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 1000})
    experiment = Experiment(
        name="live", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(timing="fixed", ttft_ms=200, itl_ms=20),),
        online=(Online(concurrency=(CONCURRENCY,), input_len=16, output_len=OUTPUT_LEN, num_prompts=NUM_PROMPTS),),
    )
    rd = RunDir.create(tmp_path_factory.mktemp("runs"), "live")
    lines = []
    display = ProgressDisplay(report=lines.append, plain_every_s=1.0)  # a line per poll, not per 5 s
    [summary] = Runner(experiment, rd, RunOptions(actors=2), report=display).run()
    yield port, rd, summary, lines
    ray.shutdown()


def raybench_series(port, cell, want_requests, timeout_s=20.0):
    """Ray's endpoint once every actor's last poll has been exported (counts settle within ~2 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        ours = [(n, tags, v) for n, tags, v in samples if n.startswith("ray_raybench_") and tags.get("cell") == cell]
        done = sum(v for n, _, v in ours if n == "ray_raybench_requests_total")
        if done >= want_requests or time.monotonic() > deadline:
            return samples, ours
        time.sleep(0.5)


def test_rays_endpoint_carries_raybench_series_with_tags_and_counts(run):
    port, _, summary, _ = run
    cell = summary["cell_id"]
    samples, ours = raybench_series(port, cell, NUM_PROMPTS)

    def total(name, **match):
        return sum(v for n, tags, v in ours if n == name and all(tags.get(k) == m for k, m in match.items()))

    assert total("ray_raybench_requests_total") == NUM_PROMPTS  # every request sent, counted once
    assert total("ray_raybench_requests_total", status="ok") == NUM_PROMPTS
    assert total("ray_raybench_output_tokens_total") == NUM_PROMPTS * OUTPUT_LEN == summary["total_output_tokens"]
    assert total("ray_raybench_ttft_ms_count") == NUM_PROMPTS
    assert total("ray_raybench_ttft_ms_bucket", le="+Inf") == NUM_PROMPTS
    assert total("ray_raybench_ttft_ms_bucket", le="150") == 0  # every TTFT is ~200 ms
    assert total("ray_raybench_itl_ms_count") == NUM_PROMPTS * (OUTPUT_LEN - 1)
    assert 19.0 < total("ray_raybench_itl_ms_sum") / total("ray_raybench_itl_ms_count") < 21.0
    assert total("ray_raybench_requests_in_flight") == 0
    actors = {tags["actor"] for n, tags, _ in ours if n == "ray_raybench_requests_total"}
    assert actors == {f"raybench:{cell}:0", f"raybench:{cell}:1"}
    for name, tags, _ in ours:
        assert (tags["experiment"], tags["backend"]) == ("live", "sim"), name
        assert tags.get("hardware", "") == ""  # Prometheus leaves an empty label out
    server = {n for n, tags, _ in ours if n.startswith("ray_raybench_server_")}
    assert {"ray_raybench_server_requests_running", "ray_raybench_server_requests_waiting"} <= server
    # the dashboard's raybench and Ray series all exist on a live cluster
    exprs = re.findall(r'"expr": "((?:[^"\\]|\\.)*)"', DASHBOARD.read_text())
    live = {n for n, _, _ in samples}
    charted = {name for expr in exprs for name in re.findall(r"\b(ray_[a-z_]+)\b", expr)}
    assert len(charted) >= 10
    assert charted - live <= {"ray_raybench_server_kv_cache_usage"}  # fixed timing has no KV model
    assert any(n == "ray_component_cpu_percentage" and tags["Component"].startswith("ray::_LoadGenActor")
               for n, tags, _ in samples)


def test_server_timeline_has_a_row_per_second_matching_the_clients_in_flight(run):
    _, rd, summary, _ = run
    cell_dir = rd.cell_dir(summary["cell_id"])
    timeline = pl.read_parquet(cell_dir / SERVER_METRICS_FILE)
    requests = pl.read_parquet(cell_dir / "requests.parquet")
    assert timeline["error"].null_count() == timeline.height and set(timeline["source"]) == {"sim"}
    t = timeline["t_ns"].to_numpy()
    gaps_s = np.diff(t[:-1]) / 1e9  # the last row is the extra one taken when the cell ended
    # once a second: the cadence holds (median), and a busy machine may delay a scrape, never skip two
    assert abs(np.median(gaps_s) - 1.0) < 0.05 and np.all((gaps_s > 0.5) & (gaps_s < 2.0)), gaps_s
    assert t[0] <= requests["t_sent_ns"].min() and t[-1] >= requests["t_done_ns"].max()
    assert timeline.height >= summary["duration_s"]  # one row per second of the cell, at least
    sent, done = requests["t_sent_ns"].to_numpy(), requests["t_done_ns"].to_numpy()

    def client_in_flight(at_ns):
        return int(np.sum((sent <= at_ns) & (done > at_ns)))

    interval_ns = 1_000_000_000
    server = (timeline["running"] + timeline["waiting"]).to_list()
    for t_ns, on_server in zip(t, server):
        window = [client_in_flight(x) for x in np.linspace(t_ns - interval_ns, t_ns + interval_ns, 201)]
        assert min(window) <= on_server <= max(window), (t_ns, on_server, window[::20])
    assert max(server) == CONCURRENCY and server[-1] == 0 and set(timeline["waiting"]) == {0}


def test_progress_lines_and_the_final_table_in_plain_output(run):
    _, _, summary, lines = run
    cell = summary["cell_id"]
    progress = [line for line in lines if line.startswith(f"  {cell}: ")]
    pattern = r"\d+/20 done, \d+ in flight, 0 failed, [\d,]+ output tok/s, median TTFT (n/a|[\d,]+ ms)$"
    assert progress and all(re.search(pattern, line) for line in progress)
    # once requests finished: the server's 200 ms or a little more on a busy machine (histogram buckets: ~3 %)
    assert 194 <= int(re.search(r"median TTFT ([\d,]+) ms", progress[-1])[1].replace(",", "")) < 2000
    assert "plan: 1/1 cells, 20/20 requests, elapsed" in "\n".join(lines)
    table = lines[-1].splitlines()
    assert table[1].split()[:3] == ["cell", "ok", "failed"] and table[3].split()[:3] == [cell, "20", "0"]
    assert not any("\x1b" in line for line in lines)

"""TTFT error of the client at the first burst of a closed-loop cell, against an independent server.

Starts ``tests/fakes/truth_server.py`` (plain asyncio, no raybench code: TTFT 200 ms, ITL 20 ms,
it stamps each request's arrival with the kernel's receive time and its first token's write), runs
``--runs`` cells of ``--num-prompts`` requests at ``--concurrency`` through raybench's runner
(warm-up excluded), and prints per run the mean TTFT error (client TTFT - server TTFT) and
where it comes from: the request's trip (kernel receipt at the server - client t_sent) and the
response's (client first-token stamp - server first write), for the first burst (the first C requests,
released at once) and for the rest. Trips use the actors' raw clocks (every process of one
machine reads the same monotonic clock), so anchoring error does not enter them.
``server_read_wait`` is how long the server's loop left a request unread after the kernel had
it: the server's own queue, which a server's log that stamps at its loop would not count.

    python benchmarks/first_burst_fidelity.py [--runs 5] [--concurrency 128] [--num-prompts 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fakes" / "truth_server.py"


def start_server(ttft_ms: float, itl_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(SERVER), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"truth server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def truth_rows(url: str, reset: bool = False) -> list:
    if reset:
        urllib.request.urlopen(urllib.request.Request(url + "/truth/reset", method="POST"), timeout=10).read()
        return []
    with urllib.request.urlopen(url + "/truth", timeout=30) as r:
        return json.load(r)


def burst_errors(requests, truth: list, actors: list[dict], concurrency: int) -> dict:
    """Mean TTFT error and trips (ms), for the first ``concurrency`` requests and the rest."""
    import polars as pl

    server = pl.DataFrame(truth, schema=["key", "t_receipt_ns", "t_write_ns", "t_loop_read_ns"], orient="row")
    offsets = pl.DataFrame({"actor": [a["name"] for a in actors], "offset": [a["clock_offset_ns"] for a in actors]})
    rows = (
        requests.filter(pl.col("status") == "ok")
        .with_columns(key=pl.concat_str([pl.col("cell_id"), pl.lit("-"), pl.col("request_id").cast(pl.Utf8)]))
        .join(server, on="key").join(offsets, on="actor")
        .with_columns(raw_sent=pl.col("t_sent_ns") + pl.col("offset"), raw_first=pl.col("t_first_ns") + pl.col("offset"))
        .sort("raw_sent")
        .with_columns(
            err=((pl.col("t_first_ns") - pl.col("t_sent_ns")) - (pl.col("t_write_ns") - pl.col("t_receipt_ns"))) / 1e6,
            req_trip=(pl.col("t_receipt_ns") - pl.col("raw_sent")) / 1e6,
            resp_trip=(pl.col("raw_first") - pl.col("t_write_ns")) / 1e6,
            server_read_wait=(pl.col("t_loop_read_ns") - pl.col("t_receipt_ns")) / 1e6,
            burst=pl.col("request_id") < concurrency,
        )
    )
    out = {"matched": rows.height, "ttft_err_mean_ms": rows["err"].mean(), "ttft_err_max_ms": rows["err"].max(),
           # the same error against a server log stamped when its loop read the request (as servers' logs are)
           "ttft_err_vs_loop_read_mean_ms": (rows["err"] + rows["server_read_wait"]).mean()}
    for name, part in (("burst", rows.filter(pl.col("burst"))), ("rest", rows.filter(~pl.col("burst")))):
        out[f"{name}_err_ms"] = part["err"].mean()
        out[f"{name}_req_trip_ms"] = part["req_trip"].mean()
        out[f"{name}_resp_trip_ms"] = part["resp_trip"].mean()
        out[f"{name}_server_read_wait_ms"] = part["server_read_wait"].mean()
        out[f"{name}_send_spread_ms"] = (part["raw_sent"].max() - part["raw_sent"].min()) / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--input-len", type=int, default=3200)
    parser.add_argument("--output-len", type=int, default=20)
    args = parser.parse_args()

    import polars as pl

    from raybench import cluster
    from raybench.experiment import Experiment, ExternalBackend, Online
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    proc, url = start_server(200.0, 20.0)
    cluster.connect(None)
    root = Path(tempfile.mkdtemp(prefix="raybench-burst-"))
    results = []
    try:
        for run in range(args.runs):
            sweep = Online(concurrency=(args.concurrency,), input_len=args.input_len, output_len=args.output_len,
                           num_prompts=args.num_prompts)
            experiment = Experiment(name=f"burst{run}", model="truth-model",
                                    backends=(ExternalBackend(name="truth", url=url),), online=(sweep,))
            truth_rows(url, reset=True)
            rd = RunDir.create(root, experiment.name)
            [summary] = Runner(experiment, rd, RunOptions(), report=lambda _line: None).run()
            requests = pl.read_parquet(rd.cell_dir(summary["cell_id"]) / "requests.parquet")
            truth = [r for r in truth_rows(url) if not r[0].startswith("warmup")]
            f = burst_errors(requests, truth, summary["actors"], args.concurrency)
            f["p50_send_lateness_ms"] = summary["median_send_lateness_ms"]
            f["p99_send_lateness_ms"] = summary["p99_send_lateness_ms"]
            results.append(f)
            print(f"run {run + 1}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in f.items()), flush=True)
    finally:
        cluster.disconnect()
        proc.terminate()
        proc.wait(timeout=10)
    means = [r["ttft_err_mean_ms"] for r in results]
    print(f"mean TTFT error per run (ms): {', '.join(f'{m:.3f}' for m in means)}; worst {max(means):.3f}")
    print(f"load average: {os.getloadavg()}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

"""How late a trace's requests leave the client, at rising arrival rates, against the simulator.

Writes a Mooncake-style trace of ``--num-prompts`` records spaced evenly at each ``--rates``
value (requests/s), replays it from ``--actors`` load-generator actors against the simulator with
fixed timing (TTFT 1 ms, ITL 1 ms, 2 output tokens: the server is never the bottleneck), and
prints per rate the send lateness (t_sent minus the record's due time) at p50, p99 and max, and
whether the cell was flagged late (p99 past the 5 ms threshold a cell is flagged beyond). The
target is p99 under 5 ms at 500 requests/s from one actor; the integration test checks a loose
bound only, as its machine is shared.

    python benchmarks/trace_send_timing.py [--rates 250 500 1000 2000] [--num-prompts 1000] [--actors 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def write_trace(path: Path, n: int, rate: float) -> Path:
    gap_ms = 1000.0 / rate
    path.write_text("".join(json.dumps({"timestamp": round(i * gap_ms, 3), "input_length": 412, "output_length": 2,
                                        "hash_ids": [i]}) + "\n" for i in range(n)))
    return path


def run_rate(root: Path, rate: float, args: argparse.Namespace) -> dict:
    import numpy as np
    import polars as pl

    from raybench.experiment import Experiment, Online, SimBackend
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    trace = write_trace(root / f"trace-{rate:g}.jsonl", args.num_prompts, rate)
    experiment = Experiment(
        name=f"trace{rate:g}", model="deepseek-ai/DeepSeek-R1", warmup_requests=0,
        backends=(SimBackend(timing="fixed", ttft_ms=1, itl_ms=1),),
        # the trace gives each record its lengths and due time; concurrency as high as the count: no cap
        online=(Online(dataset="trace", dataset_path=str(trace), num_prompts=args.num_prompts,
                       concurrency=(args.num_prompts,), input_len=412, output_len=2),),
    )
    rd = RunDir.create(root, experiment.name)
    [summary] = Runner(experiment, rd, RunOptions(actors=args.actors), report=lambda _line: None).run()
    requests = pl.read_parquet(rd.cell_dir(summary["cell_id"]) / "requests.parquet")
    late_ms = requests["send_lateness_ns"].drop_nulls().to_numpy() / 1e6
    p50, p99 = np.percentile(late_ms, [50, 99])
    return {"rate": rate, "requests": requests.height, "p50": p50, "p99": p99, "max": late_ms.max(),
            "flagged": summary["sends_late"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[250.0, 500.0, 1000.0, 2000.0])
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--actors", type=int, default=1)
    args = parser.parse_args()

    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="raybench-trace-timing-") as tmp:
            print(f"{'rate/s':>8} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  flagged late")
            for rate in args.rates:
                r = run_rate(Path(tmp), rate, args)
                print(f"{r['rate']:>8g} {r['requests']:>8} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.2f}  "
                      f"{r['flagged']}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

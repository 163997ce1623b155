"""How late a trace's requests leave the client, at rising arrival rates, against the simulator.

Writes a Mooncake-style trace of ``--num-prompts`` records spaced evenly at each ``--rates``
value (requests/s), replays it from ``--actors`` load-generator actors against the simulator with
fixed timing (TTFT 1 ms, ITL 1 ms, 2 output tokens: the server is never the bottleneck), and
prints per rate the send lateness (t_sent minus the record's due time) at p50, p99 and max, and
whether the cell was flagged late (p99 past the 5 ms threshold a cell is flagged beyond), beside
the client's own account of why a send can be late: the actor's longest event-loop lag and GC
pause, and whether the host was contended (CPU taken by other processes). First it measures
the machine itself: how often a bare sleep loop wakes past 4 ms late, and by how much. The
target is p99 under 5 ms at 500 requests/s from one actor; the integration test checks a loose
bound only, as its machine is shared.

    python benchmarks/trace_send_timing.py [--rates 250 500 1000 2000] [--num-prompts 1000] [--actors 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def write_trace(path: Path, n: int, rate: float) -> Path:
    gap_ms = 1000.0 / rate
    path.write_text("".join(json.dumps({"timestamp": round(i * gap_ms, 3), "input_length": 412, "output_length": 2,
                                        "hash_ids": [i]}) + "\n" for i in range(n)))
    return path


def machine_stalls(seconds: float, step_s: float = 0.002, floor_ms: float = 4.0) -> list[float]:
    """How long a bare 2 ms sleep loop, with nothing else to do, woke late (stalls past ``floor_ms``):
    what the machine itself (a VM's descheduled vCPU, the kernel) takes from any process."""
    stalls, end = [], time.perf_counter() + seconds
    while (t := time.perf_counter()) < end:
        time.sleep(step_s)
        late_ms = (time.perf_counter() - t - step_s) * 1e3
        if late_ms > floor_ms:
            stalls.append(late_ms)
    return stalls


def run_rate(root: Path, rate: float, args: argparse.Namespace) -> dict:
    import numpy as np
    import polars as pl

    from raybench.experiment import Experiment, Online, SimBackend
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    trace = write_trace(root / f"trace-{rate:g}.jsonl", args.num_prompts, rate)
    experiment = Experiment(
        name=f"trace{rate:g}", model="deepseek-ai/DeepSeek-R1",
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
    actors = summary.get("actors") or []
    return {"rate": rate, "requests": requests.height, "p50": p50, "p99": p99, "max": late_ms.max(),
            "flagged": summary["sends_late"], "lag": max((a.get("max_loop_lag_ms") or 0 for a in actors), default=0),
            "gc": max((a.get("gc_max_pause_ms") or 0 for a in actors), default=0),
            "contended": summary.get("host_contended")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[250.0, 500.0, 1000.0, 2000.0])
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--actors", type=int, default=1)
    args = parser.parse_args()

    import ray

    seconds = args.num_prompts / min(args.rates)
    stalls = machine_stalls(seconds)
    print(f"this machine, a bare sleep loop over {seconds:.0f} s: {len(stalls)} stalls past 4 ms, longest "
          f"{max(stalls, default=0.0):.1f} ms (each delays every send due in it)")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="raybench-trace-timing-") as tmp:
            print(f"{'rate/s':>8} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'loop lag':>8} "
                  f"{'GC ms':>6}  flagged late  host contended")
            for rate in args.rates:
                r = run_rate(Path(tmp), rate, args)
                print(f"{r['rate']:>8g} {r['requests']:>8} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.2f} "
                      f"{r['lag']:>8.2f} {r['gc']:>6.2f}  {r['flagged']!s:<12}  {r['contended']}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""10,000 concurrent streams on a local Ray cluster of this machine: recorded, with their cost.

Runs the simulator with fixed timing and a long ITL (default TTFT 1 s, ITL 1.5 s, 4 tokens:
every stream stays open ~5.5 s, so all of them are in flight at once) and one closed-loop
cell per ``--streams`` value, every request released at once, over ``--actors`` load-generator
actors. Per cell it prints: requests recorded and ok, peak concurrency, the memory each stream
costs (each actor's own account: its peak resident set minus its resident set before the
bodies were built, summed and divided by the streams; and the growth of the actors' peaks
between the smallest and the largest cell per extra stream), CPU seconds of the actors and of
the driver, the p99 send lateness (how long the burst took to leave), and the client's
TTFT/ITL error against the simulator's own log.

    python benchmarks/scale_streams.py [--streams 2000 10000] [--actors 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def run_cell(root: Path, streams: int, args: argparse.Namespace) -> dict:
    import polars as pl

    from raybench.analysis.fidelity import fidelity
    from raybench.experiment import Experiment, Online, SimBackend
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    experiment = Experiment(
        name=f"scale{streams}", model="deepseek-ai/DeepSeek-R1", warmup_requests=1,
        backends=(SimBackend(timing="fixed", ttft_ms=args.ttft_ms, itl_ms=args.itl_ms),),
        online=(Online(concurrency=(streams,), input_len=16, output_len=args.output_len, num_prompts=streams),),
    )
    rd = RunDir.create(root, experiment.name)
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    [summary] = Runner(experiment, rd, RunOptions(actors=args.actors, num_cpus_per_actor=0.1),
                       report=lambda _line: None).run()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    d = rd.cell_dir(summary["cell_id"])
    t = {n: pl.read_parquet(d / f"{n}.parquet") for n in ("requests", "chunks", "server_requests", "server_chunks")}
    return {
        "streams": streams,
        "recorded": t["requests"].height,
        "ok": summary["completed"],
        "peak_in_flight": summary["peak_concurrency_requests"],
        "nodes": len(set(t["requests"]["node"])),
        "actors": len(summary["actors"]),
        "actors_rss_peak_mb": sum(a["rss_peak_mb"] for a in summary["actors"]),
        # each actor's own account: peak resident set minus before its bodies were built
        "client_kib_per_stream": sum(a["rss_peak_mb"] - (a["rss_start_mb"] or 0) for a in summary["actors"])
        * 1024 / streams,
        "actors_cpu_s": sum(a["cpu_s"] for a in summary["actors"]),
        "driver_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "wall_s": time.monotonic() - t0,
        "duration_s": summary["duration_s"],
        "max_loop_lag_ms": max(a["max_loop_lag_ms"] for a in summary["actors"]),
        "p99_send_lateness_ms": summary.get("p99_send_lateness_ms"),
        **fidelity(t["requests"], t["chunks"], t["server_requests"], t["server_chunks"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--ttft-ms", type=float, default=1000.0)
    parser.add_argument("--itl-ms", type=float, default=1500.0)
    parser.add_argument("--output-len", type=int, default=4)
    args = parser.parse_args()

    from raybench import cluster

    cluster.connect(None, num_cpus=max(4, args.actors))
    root = Path(tempfile.mkdtemp(prefix="raybench-scale-"))
    rows = []
    try:
        for streams in sorted(args.streams):
            rows.append(run_cell(root, streams, args))
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    finally:
        cluster.disconnect()
    print(f"\n{'streams':>8} {'recorded':>8} {'ok':>6} {'peak':>6} {'KiB/stream':>10} {'actors MB':>9} "
          f"{'actor CPU-s':>11} {'driver CPU-s':>12} {'cell s':>6} {'p99 late ms':>11} {'TTFT err ms':>11} {'ITL err ms':>10}")
    for r in rows:
        print(f"{r['streams']:>8} {r['recorded']:>8} {r['ok']:>6} {r['peak_in_flight']:>6} "
              f"{r['client_kib_per_stream']:>10.1f} {r['actors_rss_peak_mb']:>9.0f} {r['actors_cpu_s']:>11.1f} "
              f"{r['driver_cpu_s']:>12.1f} {r['duration_s']:>6.1f} {r['p99_send_lateness_ms']:>11.1f} "
              f"{r['ttft_abs_err_mean_ms']:>11.2f} {r['itl_abs_err_mean_ms']:>10.2f}")
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        extra_mb = hi["actors_rss_peak_mb"] - lo["actors_rss_peak_mb"]
        print(f"client memory per extra stream, {lo['streams']} -> {hi['streams']} streams on the same actors: "
              f"{extra_mb / (hi['streams'] - lo['streams']) * 1024:.1f} KiB")
    print(f"load average {os.getloadavg()}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

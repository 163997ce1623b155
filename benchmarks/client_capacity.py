"""How many output tokens/s the load generator ingests, and its CPU cost per million tokens.

Drives the zero-latency simulator (its own process) with 1 and 2 load-generator actors at
concurrency 128 and 1024 (input 128, output 1000, one token per chunk) on a private local Ray
cluster, and prints, per case: output tokens/s ingested, client CPU-seconds per million
tokens, the projected tokens/s of one actor on one full core (1e6 / CPU-s per M), the client's
loop lag, and the simulator's own CPU share (a simulator at 100 % would be the bottleneck).

    python benchmarks/client_capacity.py [--num-prompts-per-slot 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def sim_cpu_s(url: str) -> float:
    with urllib.request.urlopen(url + "/sim/stats", timeout=10) as r:
        return json.load(r)["process_cpu_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts-per-slot", type=int, default=4)
    parser.add_argument("--output-len", type=int, default=1000)
    args = parser.parse_args()

    from raybench import cluster
    from raybench.backends.process import ServerProcess, free_port
    from raybench.experiment import Experiment, ExternalBackend, Online, SimBackend

    cluster.connect(None)
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    model = "deepseek-ai/DeepSeek-R1"
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="raybench-capacity-"))
    sim = ServerProcess(
        name="sim", argv=SimBackend(timing="zero").argv(model=model, port=port),
        base_url=f"http://127.0.0.1:{port}", model=model, log_path=root / "sim.log", ready_timeout_s=60,
    )
    rows = []
    with sim:
        backend = ExternalBackend(name="sim", url=sim.base_url)
        for actors in (1, 2):
            for concurrency in (128, 1024):
                sweep = Online(concurrency=(concurrency,), input_len=128, output_len=args.output_len,
                               num_prompts=concurrency * args.num_prompts_per_slot)
                experiment = Experiment(name=f"capacity-a{actors}", model=model, backends=(backend,), online=(sweep,))
                cpu0 = sim_cpu_s(sim.base_url)
                [summary] = Runner(experiment, RunDir.create(root, experiment.name), RunOptions(actors=actors),
                                   report=lambda _line: None).run()
                sim_cpu = sim_cpu_s(sim.base_url) - cpu0
                tokens = summary["total_output_tokens"]
                client_cpu = sum(a["cpu_s"] for a in summary["actors"])
                cpu_per_m = client_cpu / tokens * 1e6
                rows.append((actors, concurrency, summary["completed"], summary["output_throughput"], cpu_per_m,
                             1e6 / cpu_per_m, max(a["max_loop_lag_ms"] for a in summary["actors"]),
                             sim_cpu / summary["duration"]))
    cluster.disconnect()
    print(f"{'actors':>6} {'conc':>5} {'done':>5} {'out tok/s':>11} {'client CPU-s/M tok':>19} "
          f"{'1 core tok/s':>12} {'max lag ms':>10} {'sim CPU':>8}")
    for a, c, done, tput, cpm, core, lag, simcpu in rows:
        print(f"{a:>6} {c:>5} {done:>5} {tput:>11,.0f} {cpm:>19.2f} {core:>12,.0f} {lag:>10.1f} {simcpu:>7.0%}")
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

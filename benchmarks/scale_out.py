"""Ingest rate against load-generator actors on a 3-client-node cluster, with the ratio to linear.

Builds a ``ray.cluster_utils.Cluster`` on this machine (a head and ``--client-nodes`` nodes
with the ``client`` resource), starts the zero-latency simulator (it streams as fast as it
can, so the client is what is measured), and runs one closed-loop cell per actor count in
``--actors`` (1 2 4 8 by default) at ``--concurrency`` streams of ``--output-len`` tokens.
Per count it prints output tokens/s ingested, its ratio to linear (rate / (actors x rate at
1 actor)), the nodes used, and the CPU shares that say where the limit was: the actors'
(summed), the simulator's and the driver's (which receives and writes every row) over the
cell's duration. On a machine with fewer cores than actors + simulator, the ratio says how
much the cores allow, not how raybench scales across machines; the CPU shares say which.

    python benchmarks/scale_out.py [--actors 1 2 4 8] [--concurrency 256] [--output-len 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def sim_cpu_s(url: str) -> float:
    with urllib.request.urlopen(url + "/sim/stats", timeout=10) as r:
        return json.load(r)["process_cpu_s"]


class WriterClock:
    """Time spent in the driver's cell writer (Parquet of every row), wrapped around its methods."""

    def __init__(self) -> None:
        from raybench.store.cells import CellWriter

        self.seconds, self.chunk_rows = 0.0, 0
        for name in ("write_requests", "write_chunks"):
            original = getattr(CellWriter, name)

            def timed(writer, batch, _original=original, _chunks=name == "write_chunks"):
                t0 = time.perf_counter()
                _original(writer, batch)
                self.seconds += time.perf_counter() - t0
                self.chunk_rows += batch.num_rows if _chunks else 0

            setattr(CellWriter, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--client-nodes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--num-prompts", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=1000)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from raybench.backends.process import ServerProcess, free_port
    from raybench.experiment import Experiment, ExternalBackend, Online, SimBackend
    from raybench.runner import RunOptions, Runner
    from raybench.store.rundir import RunDir

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(args.client_nodes):
        nodes.add_node(num_cpus=max(args.actors), resources={"client": 1})
    ray.init(address=nodes.address, namespace="raybench")
    nodes.wait_for_nodes()
    model = "deepseek-ai/DeepSeek-R1"
    root = Path(tempfile.mkdtemp(prefix="raybench-scaleout-"))
    port = free_port()
    sim = ServerProcess(name="sim", argv=SimBackend(timing="zero").argv(model=model, port=port),
                        base_url=f"http://127.0.0.1:{port}", model=model, log_path=root / "sim.log", ready_timeout_s=60)
    rows = []
    writer = WriterClock()
    try:
        with sim:
            backend = ExternalBackend(name="sim", url=sim.base_url)
            for actors in args.actors:
                sweep = Online(concurrency=(args.concurrency,), input_len=128, output_len=args.output_len,
                               num_prompts=args.num_prompts)
                experiment = Experiment(name=f"scaleout-a{actors}", model=model, backends=(backend,), online=(sweep,))
                sim0, cpu0 = sim_cpu_s(sim.base_url), resource.getrusage(resource.RUSAGE_SELF)
                writer.seconds, writer.chunk_rows = 0.0, 0
                t0 = time.monotonic()
                [summary] = Runner(experiment, RunDir.create(root, experiment.name),
                                   RunOptions(actors=actors, num_cpus_per_actor=0.1), report=lambda _line: None).run()
                wall_s = time.monotonic() - t0
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                driver_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
                duration = summary["duration_s"]
                rows.append({
                    "actors": actors, "done": summary["completed"], "tok_s": summary["output_throughput_tokens_per_s"],
                    "nodes": len({a["node"] for a in summary["actors"]}),
                    "actors_cpu": sum(a["cpu_s"] for a in summary["actors"]) / duration,
                    "sim_cpu": (sim_cpu_s(sim.base_url) - sim0) / duration,
                    "driver_cpu_s": driver_cpu, "wall_s": wall_s, "duration_s": duration,
                    "lag_ms": max(a["max_loop_lag_ms"] for a in summary["actors"]),
                    "writer_s": writer.seconds, "chunk_rows": writer.chunk_rows,
                })
                print(rows[-1], flush=True)
    finally:
        ray.shutdown()
        nodes.shutdown()
    base = rows[0]["tok_s"] / rows[0]["actors"]
    print(f"\n{'actors':>6} {'nodes':>5} {'done':>5} {'out tok/s':>10} {'vs linear':>9} {'actors CPU':>10} "
          f"{'sim CPU':>7} {'driver CPU-s':>12} {'cell s':>6} {'max lag ms':>10}")
    for r in rows:
        print(f"{r['actors']:>6} {r['nodes']:>5} {r['done']:>5} {r['tok_s']:>10,.0f} "
              f"{r['tok_s'] / (base * r['actors']):>9.2f} {r['actors_cpu']:>10.0%} {r['sim_cpu']:>7.0%} "
              f"{r['driver_cpu_s']:>12.1f} {r['duration_s']:>6.1f} {r['lag_ms']:>10.0f}")
    rows_s = sum(r["chunk_rows"] for r in rows) / sum(r["writer_s"] for r in rows)
    print(f"driver's writer: {sum(r['writer_s'] for r in rows):.2f} s for {sum(r['chunk_rows'] for r in rows):,} chunk rows "
          f"= {rows_s:,.0f} rows/s on one core (the most one driver can write; every chunk row is one event)")
    print(f"load average {os.getloadavg()}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

"""How fast the virtual-time simulator covers the seed's matrix: estimate and predict.

    python benchmarks/sim_speed.py [EXPERIMENT.py]

Prints, for experiments/deepseek_r1.py (117 cells) unless another experiment is given:

- the plan's time estimate (what `raybench run` prints before it starts): CPU seconds of this
  process, so that a busy machine's waits for a core do not count;
- the cells' prediction in this process, run directory written but no report;
- `raybench predict` as a user runs it (its own process: imports, every cell, report.html), wall
  and CPU seconds. The issue's target for the seed's matrix is under 10 s on two cores.

Each figure is the best of three runs. The machines this runs on are shared: compare figures
taken in one run of this script (before and after a change, on one machine), not across machines.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3


def cpu_s(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def command_s(experiment: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `raybench predict` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # run outside the checkout: the raybench on the path (PYTHONPATH, or the installed one) is the one timed
    subprocess.run([sys.executable, "-m", "raybench", "predict", str(experiment), "--out", str(out)], check=True,
                   cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(experiment_file: str) -> None:
    from raybench.estimate import estimate_plan
    from raybench.experiment import load_experiment
    from raybench.predict import predict_run

    path = Path(experiment_file)
    experiment = load_experiment(path)
    cells = experiment.cells()
    with tempfile.TemporaryDirectory() as tmp:
        estimate = min(cpu_s(lambda: estimate_plan(experiment, cells)) for _ in range(REPEATS))
        predict = min(cpu_s(lambda i=i: predict_run(experiment, cells, Path(tmp, f"in-{i}"), report=False))
                      for i in range(REPEATS))
        wall, cpu = min(command_s(path, Path(tmp, f"cmd-{i}")) for i in range(REPEATS))
    print(f"{path} ({len(cells)} cells), best of {REPEATS}:")
    print(f"  estimate (the run's plan)            {estimate:6.2f} CPU-s")
    print(f"  predict, in process, no report       {predict:6.2f} CPU-s")
    print(f"  raybench predict (the command)       {wall:6.2f} s wall, {cpu:.2f} CPU-s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "experiments" / "deepseek_r1.py"))

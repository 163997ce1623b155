"""The SLO search on the simulator's engine finds the knee a brute-force sweep finds, in half its cells."""

import json

import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.search import judge

GRID = (1, 2, 4, 8, 16, 32)
# p99 TTFT on the simulated H200 at input 1000 rises from ~0.3 s (concurrency 1-2) to ~0.6 s (4)
# and ~1 s (8 and up: 8 prompts all sent at once): an 800 ms SLO puts the knee mid-grid
SLO = "ttft:800"
ARGS = ["--backend", "sim", "--sim-timing", "engine", "--input-len", "1000", "--output-len", "8", "--num-prompts", "8",
        "--goodput", SLO]

# the same cells as a grid of `bench` (ARGS): its simulator, lengths, prompts and SLO
BRUTE_FORCE = f"""
from raybench.experiment import Experiment, Online, SimBackend

experiment = Experiment(
    name="brute", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(timing="engine"),),
    online=(Online(concurrency={GRID!r}, input_len=1000, output_len=8, num_prompts=8),),
    goodput_slos_ms={{"ttft": 800}},
)
"""


def invoke(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result


@pytest.mark.slow
def test_search_matches_a_brute_force_sweep_in_half_the_cells(ray_local, tmp_path):
    # the brute force: every cell of the grid, one run on one server (as the search's probes run)
    experiment = tmp_path / "brute.py"
    experiment.write_text(BRUTE_FORCE)
    invoke(["run", str(experiment), "--no-report", "--out", str(tmp_path / "brute")])
    passed = {}
    for summary_file in (tmp_path / "brute").glob("brute/*/cells/*/summary.json"):
        summary = json.loads(summary_file.read_text())
        c = summary["cell"]["concurrency"]
        passed[c] = judge(summary, value=c, attainment=0.99).passed
    assert sorted(passed) == list(GRID)
    brute_best = max((c for c in GRID if passed[c]), default=None)
    print("\nbrute force:", passed)

    out = tmp_path / "search"
    invoke(["bench", *ARGS, "--search", "concurrency", "--search-grid", ",".join(map(str, GRID)), "--out", str(out)])
    [run_dir] = (out / "bench").iterdir()
    result = json.loads((run_dir / "search.json").read_text())["sim"]
    print("search:", result["line"])
    assert result["cells_run"] <= len(GRID) / 2
    assert len(list((run_dir / "cells").iterdir())) == result["cells_run"]  # each probe a normal cell
    assert brute_best is not None and result["best"] is not None
    assert abs(GRID.index(int(result["best"])) - GRID.index(brute_best)) <= 1
    assert "SLO search over concurrency:" in (run_dir / "report.html").read_text()  # the answer in the report
    low, high = result["bracket"]
    assert low == result["best"] and (high is None or GRID.index(int(high)) == GRID.index(int(low)) + 1)

"""`raybench run` exits 1 when a cell is not complete, with the line that says how to run it again.

The runner is replaced at its seam (no Ray, no sockets): what is checked is the command's
reading of the outcomes it gets back.
"""

import pytest
import ray
from click.testing import CliRunner

from raybench import cluster
from raybench.cli import main
from raybench.store.outcome import judge

EXPERIMENT = '''
from raybench.experiment import Experiment, Online, SimBackend

experiment = Experiment(name="x", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(),),
                        online=(Online(concurrency=(4, 8), input_len=16, output_len=4, num_prompts=32),))
'''


class _Runner:
    outcomes: list = []

    def __init__(self, experiment, run_dir, options, report=print):
        self.cells = experiment.cells()
        self.run_dir = run_dir

    def run(self):
        return [{"cell_id": c.id, **o.fields()} for c, o in zip(self.cells, self.outcomes)]


def _run(tmp_path, monkeypatch, outcomes):
    monkeypatch.setattr(cluster, "connect", lambda address: False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr("raybench.runner.Runner", _Runner)
    monkeypatch.setattr("raybench.runner.check_client_capacity", lambda cells, options: None)
    monkeypatch.setattr(_Runner, "outcomes", outcomes)
    file = tmp_path / "x.py"
    file.write_text(EXPERIMENT)
    return CliRunner().invoke(main, ["run", str(file), "--out", str(tmp_path / "runs"), "--no-report"])


def test_a_run_with_an_incomplete_cell_exits_1_and_says_how_to_resume(tmp_path, monkeypatch):
    lost = judge(range(32), range(12), why_missing="load generators lost and not replaced: raybench:c:1")
    result = _run(tmp_path, monkeypatch, [judge(range(32), range(32)), lost])
    assert result.exit_code == 1, result.output
    (run_dir,) = (tmp_path / "runs" / "x").iterdir()
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "Error: 1 of 2 cells did not complete (cell sim-online-c8-i16-o4: incomplete, 12 of 32 requests recorded "
        "(20 planned requests have no row: load generators lost and not replaced: raybench:c:1)); "
        f"their rows are kept in {run_dir}; to run them again: "
        f"raybench run {tmp_path / 'x.py'} --resume --run-dir {run_dir}")
    assert "Traceback" not in result.output


def test_a_run_whose_cells_are_all_complete_exits_0(tmp_path, monkeypatch):
    result = _run(tmp_path, monkeypatch, [judge(range(32), range(32))] * 2)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("complete", [1, 0])
def test_a_run_stopped_by_a_failed_cell_says_what_is_kept_and_how_to_go_on(tmp_path, monkeypatch, complete):
    from raybench.errors import BackendError
    from raybench.store.rundir import write_json_atomic

    def fail(self):
        for cell in self.cells[:complete]:
            write_json_atomic(self.run_dir.cell_dir(cell.id) / "summary.json",
                              {"cell_id": cell.id, "cell": cell.to_json(), **judge(range(32), range(32)).fields()})
        raise BackendError("sglang exited with code 3 during cell sim-online-c8-i16-o4")

    monkeypatch.setattr(_Runner, "run", fail)
    result = _run(tmp_path, monkeypatch, [])
    assert result.exit_code == 1, result.output
    (run_dir,) = (tmp_path / "runs" / "x").iterdir()
    *_, kept, error = result.stderr.strip().splitlines()
    # it said "complete cells are kept" when none was
    what = (f"1 complete cell is kept in {run_dir}; to run the rest" if complete else
            f"no cell completed (what was recorded is in {run_dir}); to run it again")
    assert kept == f"the run stopped: {what}: raybench run {tmp_path / 'x.py'} --resume --run-dir {run_dir}"
    assert error == "Error: sglang exited with code 3 during cell sim-online-c8-i16-o4"

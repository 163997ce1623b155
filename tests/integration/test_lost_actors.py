"""A load-generator actor killed (kill -9) or frozen mid-cell: every planned request still gets
exactly one row, or the cell says it is incomplete; never a complete-looking cell with rows missing.

The simulator answers each request in about 0.5 s, so a 2-actor cell of 32 requests at
concurrency 4 runs for about 4 s; the victim goes once the first rows are on disk, with finished,
in-flight and unsent requests.
"""

import os
import signal
import threading
import time

import polars as pl
import pytest
import ray

from raybench.cli import _check_outcomes
from raybench.errors import RunError
from raybench.experiment import Experiment, Online, SimBackend
from raybench.plan import check_resume
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir

MODEL = "deepseek-ai/DeepSeek-R1"
SWEEP = Online(concurrency=(4,), input_len=16, output_len=20, num_prompts=32)
CELL = "sim-online-c4-i16-o20"
VICTIM = f"raybench:{CELL}:1"


def _experiment():
    return Experiment(name="lost", model=MODEL, backends=(SimBackend(timing="fixed", ttft_ms=50, itl_ms=20),),
                      online=(SWEEP,))


def _signal_actor_when_busy(name: str, sig: int, box: list, rd: RunDir) -> threading.Thread:
    """Once ``name`` exists and the cell's first rows are on disk, send its process ``sig``.

    Waiting for rows, not for a fixed time, puts the signal mid-cell however slowly the actors
    start on a busy machine: the cell has sent requests and has more than half of them to go.
    """

    def act() -> None:
        deadline = time.monotonic() + 120
        pid = None
        while time.monotonic() < deadline:
            if pid is None:
                try:
                    handle = ray.get_actor(name)
                    pid = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
                except (ValueError, ray.exceptions.RayError):
                    pass
            elif list((rd.cell_dir(CELL) / "parts").glob("requests-*.parquet")):
                os.kill(pid, sig)
                box.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def _run_killing_the_victim(tmp_path, options: RunOptions) -> tuple[dict, RunDir, list[str]]:
    """The cell run with VICTIM killed (-9) once its first rows are on disk; its summary, run dir and report lines."""
    rd = RunDir.create(tmp_path, "lost")
    killed: list = []
    thread = _signal_actor_when_busy(VICTIM, signal.SIGKILL, killed, rd)
    lines: list[str] = []
    [summary] = Runner(_experiment(), rd, options, report=lines.append).run()
    thread.join(timeout=5)
    assert killed, "the actor was never killed"
    return summary, rd, lines


def _rows(rd: RunDir) -> pl.DataFrame:
    return pl.read_parquet(rd.cell_dir(CELL) / "requests.parquet").with_columns(pl.col("status").cast(pl.String))


def test_an_actor_killed_mid_cell_is_replaced_and_every_request_has_one_row(ray_local, tmp_path):
    summary, rd, _ = _run_killing_the_victim(tmp_path, RunOptions(actors=2))
    rows = _rows(rd)
    assert sorted(rows["request_id"].to_list()) == list(range(32))  # one row each, none twice
    assert summary["outcome"] == "complete" and (summary["planned_requests"], summary["recorded_requests"]) == (32, 32)
    lost = [a for a in summary["actors"] if a["lost"]]
    assert [a["name"] for a in lost] == [VICTIM] and lost[0]["replaced_by"] == f"raybench:{CELL}:2"
    # its in-flight requests are disconnected rows; its unsent ones ran on the replacement
    disconnected = rows.filter(pl.col("status") == "disconnected")
    assert 1 <= disconnected.height <= 4, disconnected
    assert set(disconnected["actor"]) == {VICTIM}
    assert all("was lost mid-request" in e for e in disconnected["error"])
    replacement = rows.filter(pl.col("actor") == f"raybench:{CELL}:2")
    assert replacement.height > 0 and set(replacement["status"]) == {"ok"}
    assert summary["completed"] + summary["failed"] == 32
    assert rd.cell_ids() == [CELL]


def test_without_a_replacement_the_cell_is_incomplete_says_so_and_a_resume_completes_it(ray_local, tmp_path):
    summary, rd, lines = _run_killing_the_victim(tmp_path, RunOptions(actors=2, max_replacements=0))
    assert summary["outcome"] == "incomplete" and summary["recorded_requests"] < 32
    assert f"load generators lost and not replaced: {VICTIM}" in summary["outcome_reason"]
    assert any(line.startswith(f"WARNING cell {CELL}: incomplete") for line in lines), lines
    table = next(line for line in lines if "Serving Benchmark Result" in line)
    assert "Cell outcome:                            incomplete" in table
    # the run fails, naming the cell and how to run it again; a resume does not skip it
    with pytest.raises(RunError, match=rf"1 of 1 cells did not complete \(cell {CELL}: incomplete.*--resume --run-dir"):
        _check_outcomes([summary], rd.path, tmp_path / "lost.py")
    assert rd.cell_ids() == [] and check_resume(_experiment().cells(), rd.completed_cells()) == set()

    [again] = Runner(_experiment(), rd, RunOptions(actors=2), report=lines.append).run()
    assert again["outcome"] == "complete" and sorted(_rows(rd)["request_id"].to_list()) == list(range(32))
    assert (rd.cell_dir(CELL) / "attempts" / "1" / "summary.json").is_file()  # the first attempt, set aside
    _check_outcomes([again], rd.path, None)


def test_an_actor_that_stops_answering_is_killed_before_its_rows_are_dropped(ray_local, tmp_path, monkeypatch):
    rd = RunDir.create(tmp_path, "lost")
    frozen: list = []
    thread = _signal_actor_when_busy(VICTIM, signal.SIGSTOP, frozen, rd)
    from raybench.loadgen import pool as pool_module

    original = pool_module.LoadGenPool.__init__

    def short_timeout(self, **kw):
        original(self, **kw, call_timeout_s=3.0)

    monkeypatch.setattr(pool_module.LoadGenPool, "__init__", short_timeout)
    try:
        [summary] = Runner(_experiment(), rd, RunOptions(actors=2), report=[].append).run()
    finally:
        thread.join(timeout=5)
        for pid in frozen:  # killed by the pool; a SIGCONT is harmless if so
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert frozen
    lost = [a for a in summary["actors"] if a["lost"]]
    assert [a["name"] for a in lost] == [VICTIM] and "no answer to a poll within 3 s: killed" in lost[0]["error"]
    with pytest.raises(ProcessLookupError):  # killed, not left sending
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(frozen[0], 0)
            time.sleep(0.2)
    rows = _rows(rd)
    assert sorted(rows["request_id"].to_list()) == list(range(32)) and summary["outcome"] == "complete"


def test_a_replacement_that_finds_no_room_leaves_the_cell_incomplete_and_the_run_goes_on(ray_local, tmp_path,
                                                                                        monkeypatch):
    from raybench.loadgen import pool as pool_module

    # the cell's own actors place as usual; the replacement asks for a resource no node has, as a
    # cluster whose freed CPU share another job took at once: it waits, and is given up
    original = pool_module.placement_options
    calls: list[int] = []

    def nowhere_after_the_first():
        calls.append(1)
        return original() if len(calls) == 1 else {"resources": {"raybench_test_no_such_node": 1}}

    monkeypatch.setattr(pool_module, "placement_options", nowhere_after_the_first)
    monkeypatch.setattr(pool_module, "_REPLACE_PLACE_S", 2.0)
    summary, rd, _ = _run_killing_the_victim(tmp_path, RunOptions(actors=2))
    assert len(calls) == 2  # the replacement was tried
    assert summary["outcome"] == "incomplete" and summary["requests_abandoned"] > 0
    assert f"load generators lost and not replaced: {VICTIM}" in summary["outcome_reason"]
    # the other actor's requests all have their rows: it was polled to the end
    survivor = _rows_of_parts_or_final(rd).filter(pl.col("actor") == f"raybench:{CELL}:0")
    assert survivor.height == 16 and set(survivor["status"]) == {"ok"}


def _rows_of_parts_or_final(rd: RunDir) -> pl.DataFrame:
    final = rd.cell_dir(CELL) / "requests.parquet"
    return pl.read_parquet(final if final.is_file() else rd.cell_dir(CELL) / "parts" / "requests-*.parquet").with_columns(
        pl.col("status").cast(pl.String))

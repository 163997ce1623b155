"""One writer per run directory, durable writes, and what a run that stops leaves behind.

Two writers are two processes: the other one is a subprocess holding ``RunDir.writing()``, as a
running ``raybench run`` does, so the lock is checked across processes as the kernel keeps it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import raybench.runner as runner_module
from raybench.backends import seed
from raybench.cli import main
from raybench.errors import RunError, StorageError
from raybench.executor import CellRun
from raybench.experiment import Experiment, Hardware, Offline, Online, SimBackend
from raybench.predict import predict_run
from raybench.report.sources import read_run_dir
from raybench.runner import Runner, RunOptions
from raybench.store.cells import CellWriter
from raybench.store.outcome import judge
from raybench.store.rundir import LOCK_FILE, RunDir, storage_errors, write_json_atomic, write_table_atomic
from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA, ChunkKind

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "experiments" / "quickstart.py"
_HOLD = """
import sys
from raybench.store.rundir import RunDir
with RunDir(sys.argv[1]).writing():
    print("locked", flush=True)
    sys.stdin.read()
"""

_TRY = """
import sys
from raybench.errors import RunError
from raybench.store.rundir import RunDir
try:
    with RunDir(sys.argv[1]).writing():
        print("written")
except RunError as err:
    print(err)
"""


@contextlib.contextmanager
def held(path: Path) -> Iterator[subprocess.Popen]:
    """Another process writing ``path`` (holding its lock) until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _busy(path: Path, pid: int) -> str:
    return (f"another raybench process (pid {pid} on {socket.gethostname()}) is writing {path}: wait for it to "
            "finish, or choose another directory (another --run-dir, or none for a new run directory under --out)")


def test_a_second_writer_fails_at_once_naming_the_directory_and_the_writer(tmp_path):
    with held(tmp_path) as other:
        with pytest.raises(RunError) as info, RunDir(tmp_path).writing():
            pass
        assert str(info.value) == _busy(tmp_path, other.pid)
    with RunDir(tmp_path).writing():  # the other one has ended: free again
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} {socket.gethostname()}\n"


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    with held(tmp_path) as other:
        other.kill()  # SIGKILL: no finally, no cleanup of its own
        other.wait(timeout=10)
    assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(other.pid)  # its file stays; its lock does not
    with RunDir(tmp_path).writing():
        pass


def test_the_lock_is_taken_once_per_run_dir_object_and_released_after(tmp_path):
    rd = RunDir(tmp_path / "new")
    # the CLI takes it, then the Runner it hands rd to; another RunDir of the same path is another writer
    with rd.writing(), rd.writing(), pytest.raises(RunError, match="is writing"), RunDir(tmp_path / "new").writing():
        pass
    with RunDir(tmp_path / "new").writing():
        pass


def test_a_file_system_without_flock_runs_unlocked(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunDir(tmp_path).writing():
        write_json_atomic(tmp_path / "plan.json", {})


def _engine_experiment() -> Experiment:
    return Experiment(name="lock", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(),),
                      offline=(Offline(batch_sizes=(2, 4), input_len=8, output_len=4),))


@pytest.fixture
def no_ray(monkeypatch):
    """The runner's calls that need a Ray cluster, answered without one; engine cells by ``engine_cell``."""
    monkeypatch.setattr(runner_module, "run_environment", lambda *args, **kwargs: {"servers": {}})
    monkeypatch.setattr(runner_module, "check_client_capacity", lambda cells, options: None)


def engine_cell(fail_on: int):
    calls = []

    def run(self, cell, cell_dir):
        calls.append(cell.id)
        if len(calls) == fail_on:
            raise RunError(f"cell {cell.id}: the engine died")
        write_table_atomic(cell_dir / "requests.parquet", REQUESTS_SCHEMA.empty_table())
        write_table_atomic(cell_dir / "chunks.parquet", CHUNKS_SCHEMA.empty_table())
        summary = {"cell_id": cell.id, "num_requests": 0, "elapsed_s": 1.0, "requests_per_second": 0.0,
                   "tokens_per_second": 0.0, "output_tokens_per_s": 0.0}
        return CellRun(summary=summary, outcome=judge(range(0), []))

    return run


def test_a_run_into_a_run_dir_another_process_writes_stops_before_writing(tmp_path, no_ray, monkeypatch):
    monkeypatch.setattr(Runner, "_run_engine_cell", engine_cell(fail_on=0))
    rd = RunDir.create(tmp_path, "lock")
    with held(rd.path) as other, pytest.raises(RunError) as info:
        Runner(_engine_experiment(), rd, RunOptions(), report=lambda line: None).run()
    assert str(info.value) == _busy(rd.path, other.pid)
    assert [p.name for p in rd.path.iterdir()] == [LOCK_FILE]  # no plan.json, no env.json moved aside, no cell


def test_a_running_run_holds_the_lock_against_other_processes(tmp_path, no_ray, monkeypatch):
    rd = RunDir.create(tmp_path, "lock")
    write = engine_cell(fail_on=0)
    seen = []

    def cell_and_a_second_writer(self, cell, cell_dir):
        second = subprocess.run([sys.executable, "-c", _TRY, str(rd.path)], capture_output=True, text=True, timeout=60,
                                check=False)
        seen.append(second.stdout)
        return write(self, cell, cell_dir)

    monkeypatch.setattr(Runner, "_run_engine_cell", cell_and_a_second_writer)
    Runner(_engine_experiment(), rd, RunOptions(), report=lambda line: None).run()
    assert seen == [_busy(rd.path, os.getpid()) + "\n"] * 2


def test_the_cli_refuses_a_run_dir_being_written_in_one_line_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.setattr("raybench.cluster.connect", lambda *args, **kwargs: pytest.fail("Ray started"))
    (tmp_path / "plan.json").write_text(json.dumps({"experiment": "quickstart", "cells": []}))
    with held(tmp_path) as other:
        result = CliRunner().invoke(main, ["run", str(QUICKSTART), "--resume", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {_busy(tmp_path, other.pid)}\n"  # not "resuming ...", nor "the run stopped"


def test_predict_holds_the_lock_while_it_writes(tmp_path, monkeypatch):
    import raybench.predict as predict_module

    original = predict_module.predict_cell
    refused = []

    def predict_cell(experiment, cell, profiles, cell_dir, *args):
        with pytest.raises(RunError, match="is writing") as info, RunDir(cell_dir.parents[1]).writing():
            pass
        refused.append(info.value)
        return original(experiment, cell, profiles, cell_dir, *args)

    monkeypatch.setattr(predict_module, "predict_cell", predict_cell)
    backend = seed.SEED_VLLM_H200
    experiment = Experiment(name="lock", model="deepseek-ai/DeepSeek-R1", backends=(backend,),
                            hardware={backend.name: Hardware(name="H200", count=8)},
                            online=(Online(concurrency=(2,), input_len=16, output_len=4, num_prompts=2),))
    run_dir, _ = predict_run(experiment, experiment.cells(), tmp_path, report=False)
    assert len(refused) == 1
    with run_dir.writing():  # released when the prediction is written
        pass


def test_readers_list_a_locked_run_dir_as_before(tmp_path, no_ray, monkeypatch):
    monkeypatch.setattr(Runner, "_run_engine_cell", engine_cell(fail_on=0))
    rd = RunDir.create(tmp_path, "lock")
    Runner(_engine_experiment(), rd, RunOptions(), report=lambda line: None).run()
    with held(rd.path):  # report, compare, plan --run-dir and --resume's search read while a run writes
        assert len(rd.cell_ids()) == 2 and set(rd.cell_outcomes()) == set(rd.cell_ids())
        assert RunDir.latest(tmp_path, "lock").path == rd.path
        rows = read_run_dir(rd.path)
        assert rows.frame.height == 2 and not rows.left_out


def test_a_run_stopped_by_an_error_tables_the_cells_that_completed(tmp_path, no_ray, monkeypatch):
    monkeypatch.setattr(Runner, "_run_engine_cell", engine_cell(fail_on=2))
    rd = RunDir.create(tmp_path, "lock")
    with pytest.raises(RunError, match="the engine died"):
        Runner(_engine_experiment(), rd, RunOptions(), report=lambda line: None).run()
    table = pq.read_table(rd.summary_parquet).to_pylist()
    # the failed cell has its summary too (outcome failed, and why), as after a run that ends
    assert [(row["cell_id"], row["outcome"]) for row in table] == [
        ("sim-offline-engine-b2-i8-o4", "complete"), ("sim-offline-engine-b4-i8-o4", "failed")]
    with rd.writing():  # the lock went with the run
        pass


def test_a_summary_table_that_cannot_be_written_either_does_not_hide_the_first_error(tmp_path, no_ray, monkeypatch):
    monkeypatch.setattr(Runner, "_run_engine_cell", engine_cell(fail_on=2))
    real = runner_module.write_table_atomic

    def full_for_the_table(path, table):
        if path.name == "summary.parquet":
            with storage_errors(path):
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, table)

    monkeypatch.setattr(runner_module, "write_table_atomic", full_for_the_table)
    with pytest.raises(RunError, match="^cell sim-offline-engine-b4-i8-o4: the engine died$"):
        Runner(_engine_experiment(), RunDir.create(tmp_path, "lock"), RunOptions(), report=lambda line: None).run()


@pytest.mark.parametrize(("code", "fix"), [
    (errno.ENOSPC, "free disk space"),
    (errno.EDQUOT, "free disk space"),
    (errno.ENOENT, "something moved or removed part of the run directory while the run wrote it: leave it to the run"),
    (errno.EROFS, "make the run directory writable"),
    (errno.EIO, "fix the write error"),
])
def test_the_advice_after_a_failed_write_matches_its_errno(tmp_path, monkeypatch, code, fix):
    rd = RunDir.create(tmp_path, "x")
    where = rd.cell_dir("c") / "requests.parquet"

    def fails(self):
        with storage_errors(where):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Runner, "_run_plan", fails)
    with pytest.raises(StorageError) as info:
        Runner(_engine_experiment(), rd, RunOptions(experiment_file=tmp_path / "exp.py"), report=lambda _: None).run()
    assert str(info.value).endswith(f"(the cell being written is not); {fix}, then: "
                                    f"raybench run {tmp_path / 'exp.py'} --run-dir {rd.path}")


def test_a_cell_whose_parts_folder_vanished_is_not_told_to_free_disk_space(tmp_path, monkeypatch):
    rd = RunDir.create(tmp_path, "x")

    def parts_moved_away(self):  # what a second writer's set_aside() did to a running cell
        writer = CellWriter(rd.cell_dir("c"))
        writer.parts_dir.rmdir()
        writer.write_chunks(pa.RecordBatch.from_pylist(
            [{"cell_id": "c", "request_id": 0, "seq": 0, "t_ns": 0, "n_tokens": 1, "kind": ChunkKind.TOKEN.value}],
            schema=CHUNKS_SCHEMA))
        writer.flush()

    monkeypatch.setattr(Runner, "_run_plan", parts_moved_away)
    with pytest.raises(StorageError) as info:
        Runner(_engine_experiment(), rd, RunOptions(), report=lambda _: None).run()
    assert "No such file or directory" in str(info.value) and "free disk space" not in str(info.value)
    assert "something moved or removed part of the run directory" in str(info.value)


@pytest.fixture
def durability(monkeypatch) -> list[tuple[str, int]]:
    """("fsync", inode) and ("replace", inode of the file renamed), in the order they happen."""
    events: list[tuple[str, int]] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(("replace", os.stat(src).st_ino)),
                                                         replace(src, dst))[1])
    return events


def _synced_before_renamed(events: list[tuple[str, int]], path: Path) -> bool:
    """``path``'s data reached the disk before its name did, and its folder after."""
    inode = path.stat().st_ino
    at = events.index(("replace", inode))
    return ("fsync", inode) in events[:at] and ("fsync", path.parent.stat().st_ino) in events[at:]


def test_atomic_writes_reach_the_disk_before_their_name_does(tmp_path, durability):
    write_json_atomic(tmp_path / "summary.json", {"a": 1})
    write_table_atomic(tmp_path / "summary.parquet", pa.table({"a": [1]}))
    assert _synced_before_renamed(durability, tmp_path / "summary.json")
    assert _synced_before_renamed(durability, tmp_path / "summary.parquet")


def test_row_parts_and_merged_tables_reach_the_disk_before_their_name_does(tmp_path, durability):
    writer = CellWriter(tmp_path / "cell")
    writer.write_chunks(pa.RecordBatch.from_pylist(
        [{"cell_id": "c", "request_id": 0, "seq": 0, "t_ns": 0, "n_tokens": 1, "kind": ChunkKind.TOKEN.value}],
        schema=CHUNKS_SCHEMA))
    writer.flush()
    assert _synced_before_renamed(durability, tmp_path / "cell" / "parts" / "chunks-000001.parquet")
    writer.close()
    assert _synced_before_renamed(durability, tmp_path / "cell" / "chunks.parquet")
    assert _synced_before_renamed(durability, tmp_path / "cell" / "requests.parquet")

"""Processes killed under `raybench run`, from the command line.

A SIGKILL of the driver mid-cell: finished cells stay as they were, the rows of the cell under way
are on disk as parts, `plan --run-dir` shows that cell incomplete, and `--resume` completes it.
A kill -9 of a load generator mid-cell: the run replaces it, the cell ends complete, exit 0.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from raybench.store.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = '''
from raybench.experiment import Experiment, Online, SimBackend

experiment = Experiment(
    name="crash",
    model="deepseek-ai/DeepSeek-R1",
    backends=(SimBackend(timing="fixed", ttft_ms=50, itl_ms=20),),
    online=(Online(concurrency=(8, 4), input_len=16, output_len=20, num_prompts=32),),
    warmup_requests=0,
)
'''
FIRST, SECOND = "sim-online-c8-i16-o20", "sim-online-c4-i16-o20"
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}


def _raybench(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raybench", *args], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, timeout=300, **kw)


def _parts(cell_dir: Path) -> list[Path]:
    return sorted((cell_dir / "parts").glob("requests-*.parquet")) if (cell_dir / "parts").is_dir() else []


def test_a_killed_driver_loses_nothing_received_and_a_resume_completes_the_cell(tmp_path):
    file = tmp_path / "crash.py"
    file.write_text(EXPERIMENT)
    rd = RunDir(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "raybench", "run", str(file), "--run-dir", str(rd.path),
                             "--no-report"], cwd=ROOT, env=ENV, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_parts(rd.cell_dir(SECOND))) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:  # the driver's own Ray processes share its session: end them too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    first_files = {p.name: p.stat().st_mtime_ns for p in rd.cell_dir(FIRST).iterdir()}
    kept = pl.concat([pl.read_parquet(p) for p in _parts(rd.cell_dir(SECOND))])
    assert kept.height >= 1 and not (rd.cell_dir(SECOND) / "summary.json").exists()
    assert rd.cell_ids() == [FIRST]

    plan = _raybench("plan", str(file), "--run-dir", str(rd.path), "--format", "json")
    assert plan.returncode == 0, plan.stderr
    rows = {r["id"]: r for r in json.loads(plan.stdout)}
    assert (rows[FIRST]["outcome"], rows[SECOND]["outcome"]) == ("complete", "incomplete")
    assert f"{kept['request_id'].n_unique()} request rows kept in parts/" in rows[SECOND]["outcome_reason"]

    resumed = _raybench("run", str(file), "--run-dir", str(rd.path), "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stderr and "1 of 2 cells complete, 1 to run" in resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in rd.cell_dir(FIRST).iterdir()} == first_files
    assert rd.cell_ids() == sorted([FIRST, SECOND])
    summary = json.loads((rd.cell_dir(SECOND) / "summary.json").read_text())
    assert summary["outcome"] == "complete" and summary["recorded_requests"] == 32
    requests = pl.read_parquet(rd.cell_dir(SECOND) / "requests.parquet")
    assert sorted(requests["request_id"].to_list()) == list(range(32))
    # the killed attempt's rows are kept apart, never mixed into the new ones
    aside = pl.concat([pl.read_parquet(p) for p in sorted((rd.cell_dir(SECOND) / "attempts" / "1" / "parts").glob("requests-*"))])
    assert aside.height == kept.height
    assert sorted(pl.read_parquet(rd.summary_parquet)["outcome"].to_list()) == ["complete", "complete"]


def _descendants(root: int) -> dict[int, str]:
    """Processes under ``root`` (pid -> command line), read from /proc: only this run's own."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = cmdlines.get(child, "")
            todo.append(child)
    return out


def test_kill_9_of_a_load_generator_under_the_cli_still_ends_complete_and_exits_0(tmp_path):
    """The issue's scenario through the command line: before, the cell said 12 of 32 and looked done."""
    file = tmp_path / "crash.py"
    file.write_text(EXPERIMENT.replace("concurrency=(8, 4)", "concurrency=(4,)"))
    rd = RunDir(tmp_path / "run")
    killed = None
    # output to a file, not a pipe: nothing blocks the run while it is watched
    with open(tmp_path / "output.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "raybench", "run", str(file), "--run-dir", str(rd.path),
                                 "--no-report", "--actors", "2"], cwd=ROOT, env=ENV, text=True,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while killed is None and time.monotonic() < deadline and proc.poll() is None:
                if len(_parts(rd.cell_dir(SECOND))) >= 2:
                    # the process title is ray::_LoadGenActor.<method>: either of the two will do
                    found = sorted(pid for pid, cmd in _descendants(proc.pid).items() if "ray::_LoadGenActor" in cmd)
                    if found:
                        killed = found[0]
                        os.kill(killed, signal.SIGKILL)
                time.sleep(0.1)
            proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = (tmp_path / "output.txt").read_text()
    assert killed is not None, "the load generator's process was not found"
    assert proc.returncode == 0, output
    summary = json.loads((rd.cell_dir(SECOND) / "summary.json").read_text())
    assert summary["outcome"] == "complete" and summary["lost_actors"] == 1 and summary["replaced_actors"] == 1
    requests = pl.read_parquet(rd.cell_dir(SECOND) / "requests.parquet")
    assert sorted(requests["request_id"].to_list()) == list(range(32))

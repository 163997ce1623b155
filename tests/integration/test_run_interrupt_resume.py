"""The acceptance selection of the seed's experiment, interrupted mid-way and resumed from the command line.

`raybench run experiments/deepseek_r1.py --simulate --only backend=vllm,hardware=H200,mode=online,output_len=800
--num-prompts 40` picks 9 cells. The simulator answers at once here (--sim-timing zero): in real time
(the default) the same 9 cells take 16 minutes.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from raybench.store.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
DEEPSEEK = ROOT / "experiments" / "deepseek_r1.py"
SELECTION = ["--simulate", "--only", "backend=vllm,hardware=H200,mode=online,output_len=800", "--num-prompts", "40"]
PLAN = [
    *(f"vllm-h200.H200-online-c{c}-i3200-o800" for c in (4, 8, 16, 32, 64, 128)),
    *(f"vllm-h200-prefix.H200-online-c{c}-i3200p2000-o800" for c in (32, 64, 128)),
]
INTERRUPT_AT = 3  # SIGINT as the fourth cell starts


def _raybench(*args: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "raybench", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _signal_when(proc: subprocess.Popen, ready, signum: int, *, delay_s: float = 0.0) -> str:
    """Send ``signum`` once the output so far satisfies ``ready`` (after ``delay_s``); all the output, once it exits."""
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if ready("".join(lines)):
                time.sleep(delay_s)
                proc.send_signal(signum)
                break
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines)


def _started_cells(output: str) -> list[str]:
    """The cells a run started: its "cell <id>" lines (the final table's header also starts with "cell")."""
    return [m[1] for m in re.finditer(r"^cell (\S+)$", output, re.MULTILINE)]


def _files(rd: RunDir, cell_id: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in rd.cell_dir(cell_id).iterdir()}


# the resume reads only the run directory, which both signals leave alike: it runs once, after Ctrl-C
@pytest.mark.parametrize(("signum", "exit_code", "name", "resume"),
                         [(signal.SIGINT, 130, "Ctrl-C", True), (signal.SIGTERM, 143, "SIGTERM", False)])
def test_interrupted_run_resumes_only_the_unfinished_cells(tmp_path, signum, exit_code, name, resume):
    """Ctrl-C and SIGTERM alike: one "interrupted" line, completed cells kept, no temporary file left."""
    out = tmp_path / "runs"
    common = ["run", str(DEEPSEEK), *SELECTION, "--sim-timing", "zero", "--no-report", "--out", str(out)]
    proc = _raybench(*common)
    first = _signal_when(proc, lambda output: len(_started_cells(output)) == INTERRUPT_AT + 1, signum)
    assert proc.returncode == exit_code, first
    assert len(re.findall(r"^interrupted: ", first, re.MULTILINE)) == 1 and "Traceback" not in first, first
    assert f"interrupted: completed cells are kept in the run directory; run again with --resume for the rest ({name})" in first
    assert "SIGTERM received" not in first and "*** " not in first, first  # no native stack dump from Ray's handler
    assert _started_cells(first) == PLAN[: INTERRUPT_AT + 1]
    (path,) = (out / "deepseek_r1").iterdir()
    rd = RunDir(path)
    complete = PLAN[:INTERRUPT_AT]
    assert rd.cell_ids() == sorted(complete), first  # the cell under way when interrupted is not complete
    assert not list(rd.path.rglob("*.tmp")), first  # nor does it leave half files behind
    before = {c: _files(rd, c) for c in complete}
    if not resume:
        return

    t0 = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "raybench", *common, "--resume"], cwd=ROOT, text=True,
                            capture_output=True, timeout=300,
                            env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    print(f"resumed run: {time.monotonic() - t0:.1f} s")
    assert f"resuming {rd.path}: {INTERRUPT_AT} of {len(PLAN)} cells complete, {len(PLAN) - INTERRUPT_AT} to run" in output
    assert _started_cells(output) == PLAN[INTERRUPT_AT:]  # only the unfinished cells ran, in plan order
    assert second.stdout.strip() == str(rd.path)
    assert rd.cell_ids() == sorted(PLAN)
    assert {c: _files(rd, c) for c in complete} == before  # the finished cells were not touched

    summary = pl.read_parquet(rd.summary_parquet)
    assert sorted(summary["cell_id"].to_list()) == sorted(PLAN)
    assert (summary["completed"] == 40).all() and (summary["failed"] == 0).all()
    # the first invocation's metadata is kept beside the second's
    env, env_first = (json.loads((rd.path / name).read_text()) for name in ("env.json", "env.1.json"))
    assert env["options"]["only"] == env_first["options"]["only"] == "backend=vllm,hardware=H200,mode=online,output_len=800"
    assert "--resume" in env["command"] and "--resume" not in env_first["command"]
    assert [c["id"] for c in env["plan"]] == PLAN
    assert env["experiment"]["source"]["text"] == DEEPSEEK.read_text()
    assert set(env["servers"]) == {"vllm-h200", "vllm-h200-prefix"}
    assert all(s["started"] and s["version"] for s in env["servers"].values())
    # the simulated stand-ins record the launch they stand for: the prefix command's chunked prefill
    launches = {name: s["simulator"]["modes"]["online"] for name, s in env["servers"].items()}
    assert {name: (m["engine"], m["features"]["chunked_prefill"]) for name, m in launches.items()} == \
        {"vllm-h200": ("vllm", False), "vllm-h200-prefix": ("vllm", True)}


def test_a_resume_with_other_settings_is_refused_before_anything_starts(tmp_path):
    rd = RunDir.create(tmp_path, "deepseek_r1")
    cell = PLAN[0]
    rd.cell_dir(cell).mkdir(parents=True)
    stored = {"cell_id": cell, "cell": {"id": cell, "num_prompts": 40, "engine": "sim", "seed": 0}}
    (rd.cell_dir(cell) / "summary.json").write_text(json.dumps(stored))
    rd.plan_json.write_text(json.dumps({"experiment": "deepseek_r1", "cells": [stored["cell"]]}))
    result = subprocess.run(
        [sys.executable, "-m", "raybench", "run", str(DEEPSEEK), *SELECTION[1:3], "--run-dir", str(rd.path)],
        cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: cell {cell} is complete in the run directory with other settings (num_prompts=40 there, 500 now; "
        "engine='sim' there, 'vllm' now). Resume with the options the run was started with (see its env.json "
        "\"options\"), or start a new run directory")
    # nothing written but the lock (taken before the check, so that no other run changes what it reads), no Ray started
    assert sorted(p.name for p in rd.path.iterdir()) == [".lock", "cells", "plan.json"]


# fixed timing: each request takes 0.1 s + 100 x 0.05 s = 5.1 s, two rounds of two: about 10 s a cell,
# long enough that the signal lands while the driver polls
SLOW_CELL = ["bench", "--backend", "sim", "--sim-timing", "fixed", "--sim-ttft-ms", "100", "--sim-itl-ms", "50",
             "--input-len", "16", "--output-len", "100", "--num-prompts", "4", "--concurrency", "2", "--no-report"]


def test_sigterm_while_the_driver_waits_in_ray_get_exits_143_and_says_sigterm(tmp_path):
    """During a cell the driver is nearly always blocked in ``ray.get`` on the actors' polls. Ray checks
    for signals there and turns whatever interrupt the handler raises into a plain KeyboardInterrupt,
    so the exception's type alone cannot tell SIGTERM from Ctrl-C."""
    proc = _raybench(*SLOW_CELL, "--out", str(tmp_path / "runs"))
    # a progress line: the cell's requests are under way and the driver is in its poll loop. Sent at
    # once, the signal would land in the print of this very line; half a poll later (a poll waits up
    # to 1 s), it lands inside ray.get
    output = _signal_when(proc, lambda output: re.search(r"\d+/4 done", output) is not None, signal.SIGTERM,
                          delay_s=0.5)
    assert re.search(r"\d+/4 done", output), output  # the signal was sent mid-cell
    assert proc.returncode == 143, output
    assert "interrupted (SIGTERM)\n" in output and "(Ctrl-C)" not in output, output
    assert "Traceback" not in output, output

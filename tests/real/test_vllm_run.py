"""`raybench run` with a VLLMBackend: raybench starts the real `vllm serve` through its
ServerActor, resets its prefix cache between cells, scrapes its /metrics, runs the offline
cell with the real `vllm.LLM`, and leaves no vLLM process behind, after the run and after a
SIGINT in the middle of a cell."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from real_vllm import SERVED_NAME, VLLM_ENV, marked_pids, raybench_cmd, read_json, run_dir_of

import vllm_env
from raybench.store.cells import read_cell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

EXPERIMENT = """
from raybench.backends import Placement, VLLMBackend
from raybench.experiment import Experiment, Offline, Online

experiment = Experiment(
    name="real-vllm",
    model={served!r},
    tokenizer={model!r},
    backends=(VLLMBackend(
        name="vllm-cpu", executable={vllm!r}, model_path={model!r}, placement=Placement(num_gpus=0),
        env={env!r}, reset_cache=True, max_model_len=1024, extra_args=("--enforce-eager",), ready_timeout_s=600,
    ),),
    online=(Online(concurrency={concurrency!r}, input_len=32, output_len={output_len}, num_prompts={num_prompts}),),
    offline={offline},
)
"""


def write_experiment(path: Path, model: Path, mark: str, *, concurrency=(1, 2), output_len=8, num_prompts=6,
                     offline="(Offline(batch_sizes=(4,), input_len=32, output_len=8),)") -> Path:
    path.write_text(EXPERIMENT.format(
        served=SERVED_NAME, model=str(model), vllm=str(vllm_env.vllm_executable()),
        env={**VLLM_ENV, "RAYBENCH_TEST_MARK": mark}, concurrency=concurrency, output_len=output_len,
        num_prompts=num_prompts, offline=offline))
    return path


def run_env() -> dict[str, str]:
    # the offline engine inherits the actor's environment: marked too, so a leftover is found
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def assert_no_vllm_left(mark: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = marked_pids(mark)
    for pid in left:  # never leave them to the next test, even when failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"vLLM processes left behind: {left}"


def test_run_starts_vllm_resets_its_cache_scrapes_it_and_runs_the_engine(vllm_venv, tiny_model, tmp_path):
    mark = f"run-{os.getpid()}"
    exp = write_experiment(tmp_path / "exp.py", tiny_model, mark)
    proc = subprocess.run(raybench_cmd("run", str(exp), "--out", str(tmp_path / "runs"), "--no-report"),
                          capture_output=True, text=True, timeout=1200, env=run_env())
    try:
        assert proc.returncode == 0, proc.stderr[-4000:]
        run_dir = run_dir_of(proc.stdout)
        log = (run_dir / "servers" / "vllm-cpu.log").read_text()
        assert "Starting vLLM server" in log or "Application startup complete" in log
        assert log.count("POST /reset_prefix_cache") >= 2, "the prefix cache was not reset before each cell"
        assert read_json(run_dir / "servers" / "vllm-cpu.json").get("version") == vllm_env.VLLM_VERSION
        cells = sorted(p for p in (run_dir / "cells").iterdir() if p.is_dir())
        online = [c for c in cells if (c / "server_metrics.parquet").exists()]
        assert len(online) == 2, [c.name for c in cells]
        for cell in online:
            requests, _ = read_cell(cell)
            assert requests["status"].cast(pl.String).to_list() == ["ok"] * 6, requests["error"].to_list()
            assert requests["output_tokens"].to_list() == [8] * 6
            metrics = pl.read_parquet(cell / "server_metrics.parquet")
            real = metrics.filter((pl.col("source") == "vllm") & pl.col("generation_tokens_total").is_not_null())
            assert real.height > 0, metrics
        (offline,) = [c for c in cells if c not in online]
        summary = read_json(offline / "summary.json")
        assert summary["num_requests"] == 4 and summary["output_tokens_per_s"] > 0
        requests, _ = read_cell(offline)
        assert requests["output_tokens"].to_list() == [8] * 4  # counted from what vllm.LLM returned
        assert requests["server_prompt_tokens"].to_list() == [32] * 4
    finally:
        assert_no_vllm_left(mark)


def test_sigint_mid_cell_leaves_no_vllm_process(vllm_venv, tiny_model, tmp_path):
    mark = f"sigint-{os.getpid()}"
    exp = write_experiment(tmp_path / "exp.py", tiny_model, mark, concurrency=(2,), output_len=64, num_prompts=400,
                           offline="()")
    proc = subprocess.Popen(raybench_cmd("run", str(exp), "--out", str(tmp_path / "runs"), "--no-report"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env())
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("cell "):
                time.sleep(3)  # well inside the cell: 400 requests take minutes
                assert marked_pids(mark), "no vLLM process was running during the cell"
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=180)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert_no_vllm_left(mark)
    output = "".join(lines)
    assert proc.returncode == 130, output[-4000:]
    assert "interrupted" in output

"""`python -m raybench.sim` as a process: announces itself, writes the ready file, stops on SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from simclient import completion_body

REPO = Path(__file__).resolve().parents[3]


async def test_serves_until_sigterm(tmp_path):
    ready = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raybench.sim", "--timing", "fixed", "--ttft-ms", "1", "--itl-ms", "1",
         "--ready-file", str(ready)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        port = int(ready.read_text())
        assert list(tmp_path.iterdir()) == [ready]  # the temp name was renamed away
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/v1/completions", data=completion_body(3)) as resp:
                assert resp.status == 200 and (await resp.read()).endswith(b"data: [DONE]\n\n")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"raybench sim listening on http://127.0.0.1:{port}"


def test_a_taken_port_is_a_one_line_error():
    import socket

    from click.testing import CliRunner

    from raybench.sim.command import sim_command

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(sim_command, ["--port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"Error: cannot serve on 127.0.0.1:{port}: ")

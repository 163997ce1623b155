"""SIGTERM while the driver waits inside a Ray call: exit 143 and "(SIGTERM)", as docs/experiments.md promise.

During a cell the driver spends nearly all its time blocked in ``ray.get`` on the actors' polls. Ray
checks for signals there and turns whatever interrupt the handler raises into a plain
KeyboardInterrupt, so the exception's type alone cannot tell SIGTERM from Ctrl-C.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# fixed timing: each request takes 0.1 s + 100 x 0.05 s = 5.1 s, two rounds of two: about 10 s a cell,
# long enough that the signal lands while the driver polls
CELL = ["bench", "--backend", "sim", "--sim-timing", "fixed", "--sim-ttft-ms", "100", "--sim-itl-ms", "50",
        "--input-len", "16", "--output-len", "100", "--num-prompts", "4", "--concurrency", "2", "--no-report"]


def test_sigterm_while_the_driver_waits_in_ray_get_exits_143_and_says_sigterm(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "raybench", *CELL, "--out", str(tmp_path / "runs")], cwd=ROOT,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            # a progress line: the cell's requests are under way and the driver is in its poll loop.
            # Sent at once, the signal would land in the print of this very line; half a poll
            # later (a poll waits up to 1 s), it lands inside ray.get
            if re.search(r"\d+/4 done", line):
                time.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert re.search(r"\d+/4 done", output), output  # the signal was sent mid-cell
    assert proc.returncode == 143, output
    assert "interrupted (SIGTERM)\n" in output and "(Ctrl-C)" not in output, output
    assert "Traceback" not in output, output

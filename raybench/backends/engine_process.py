"""Offline engine mode for an engine installed in another Python environment.

A server backend names its executable (``VLLMBackend(executable="/opt/vllm/bin/vllm")``); when
that executable is a script of another interpreter (a virtualenv of its own, the usual way to
install vLLM beside a project), the engine cannot be imported into the Ray worker. It runs
instead in a child process of the EngineActor, under that interpreter, with
``engine_script.py``: same engine arguments, same timed ``generate``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from raybench.errors import BackendError

_SCRIPT = Path(__file__).with_name("engine_script.py")
_RESULT_MARK = "RAYBENCH_ENGINE_RESULT "
_OUTPUT_TAIL_CHARS = 2000


def engine_python(executable: str) -> str | None:
    """The interpreter ``executable`` runs under, when it is another Python than this one.

    None when the executable cannot be found, is not a Python script, or runs under this very
    interpreter: the engine is then imported in this process.
    """
    path = shutil.which(executable)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!") or b"python" not in first:
        return None
    python = first[2:].decode(errors="replace").split()[0]
    # venvs' pythons are links to one base interpreter: an environment is told by its folder
    if not os.path.isfile(python) or Path(python).parent == Path(sys.executable).parent:
        return None
    return python


def _die_with_parent() -> None:
    """The engine child ends when its actor is killed, instead of running on unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_engine_script(python: str, job: dict[str, Any], *, node: str) -> dict[str, Any]:
    """Run one engine job under ``python``; its result dict, or a BackendError naming the cause."""
    proc = subprocess.run(
        [python, str(_SCRIPT)], input=json.dumps(job), capture_output=True, text=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(_RESULT_MARK)), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout)[-_OUTPUT_TAIL_CHARS:]
        raise BackendError(f"offline engine under {python} on node {node} exited with code {proc.returncode}: {tail}")
    result = json.loads(line[len(_RESULT_MARK):])
    if "error" in result:
        raise BackendError(f"offline engine on node {node}: {result['error']}")
    return result

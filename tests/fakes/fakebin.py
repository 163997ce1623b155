"""Puts the fake servers on PATH under the real names: ``vllm``, ``trtllm-serve``, and an
``sglang`` package on PYTHONPATH for ``python -m sglang.launch_server``.

The environment this returns goes into a backend's ``env``, so only the server process sees
the fakes, on whichever node Ray starts it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent
MARK_VAR = "RAYBENCH_TEST_MARK"  # every fake server carries it: tests find leftovers by it


def install(bin_dir: Path, mark: str) -> dict[str, str]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, kind in (("vllm", "vllm"), ("trtllm-serve", "trtllm")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / "fake_servers.py"}" {kind} "$@"\n')
        script.chmod(0o755)
    pythonpath = os.pathsep.join(p for p in (str(FAKES / "pylib"), os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": pythonpath, MARK_VAR: mark}


def marked_pids(mark: str) -> list[int]:
    """Every live process whose environment carries ``mark`` (servers, their children, watchdogs)."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found

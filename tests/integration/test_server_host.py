"""ServerHost, the ServerActor's logic, without Ray: start, log, stop, and a stop that races a slow start."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from raybench.backends import SGLangBackend, SimBackend
from raybench.backends.server_actor import ServerHost
from raybench.errors import BackendError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
from fakebin import install, marked_pids  # noqa: E402

MODEL = "deepseek-ai/DeepSeek-R1"


def host(backend, **kwargs):
    return ServerHost(backend, model=MODEL, node_id="node-0", node_ip="127.0.0.1", log_label="servers/x.log", **kwargs)


def test_start_read_the_log_stop():
    server = host(SimBackend(timing="zero"))
    try:
        info = server.start()
        assert info.url.startswith("http://127.0.0.1:") and info.model == MODEL and info.gpu_ids == ()
        log = server.read_log(0).decode()
        assert log.startswith("raybench: starting sim on node 127.0.0.1 (GPUs none):")
        assert "raybench sim listening on" in log
        assert server.read_log(len(log)) == b""
        assert server.poll() is None
    finally:
        server.stop()
    assert server.poll() is None  # stopped: no process is tracked any more
    server.stop()  # idempotent
    server.cleanup()
    assert not server.log_path.exists()


def test_a_stop_during_a_slow_start_ends_the_start_at_once(tmp_path):
    mark = uuid.uuid4().hex
    env = {**install(tmp_path / "bin", mark), "RAYBENCH_FAKE_MODE": "slow_start", "RAYBENCH_FAKE_DELAY_S": "30"}
    server = host(SGLangBackend(env=env, ready_timeout_s=60))
    errors = []

    def start():
        try:
            server.start()
        except BackendError as err:
            errors.append(str(err))

    thread = threading.Thread(target=start)
    thread.start()
    while not marked_pids(mark):
        time.sleep(0.05)
    t0 = time.monotonic()
    server.stop()
    thread.join(timeout=15)
    # at once: well inside the 30 s the start would take (seconds of slack for a busy machine)
    assert not thread.is_alive() and time.monotonic() - t0 < 10
    assert "sglang was stopped while starting; last lines of servers/x.log" in errors[0]
    assert "[node 127.0.0.1]" in errors[0]
    deadline = time.monotonic() + 5
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not marked_pids(mark)


def test_a_missing_executable_names_the_node_and_the_fix():
    server = host(SGLangBackend(python="/nonexistent/python"))
    with pytest.raises(BackendError, match=r"No such file or directory on node 127\.0\.0\.1: is sglang installed there"):
        server.start()
    server.stop()

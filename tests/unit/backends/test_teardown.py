"""The two fallbacks behind a clean stop: the watchdog (actor died) and the driver's ServerGuard."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from raybench.backends.guard import ServerGuard
from raybench.backends.watchdog import release_watchdog, start_watchdog


def _group_alive(pgid: int) -> bool:
    """Any live (not zombie) process in the group: orphans may wait a while to be reaped."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _wait_gone(proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server_group():
    """A stand-in server: a shell in its own process group with a child that ignores SIGTERM."""
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True)
    yield proc
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_watchdog_kills_the_group_when_its_owner_goes_away(server_group):
    fd = start_watchdog(pgid=server_group.pid, grace_s=0.3)
    os.close(fd)  # what the kernel does when the actor's process dies, however it dies
    assert _wait_gone(server_group, 5)


def test_watchdog_leaves_a_cleanly_stopped_server_alone(server_group):
    fd = start_watchdog(pgid=server_group.pid, grace_s=0.3)
    release_watchdog(fd)
    time.sleep(1)
    assert server_group.poll() is None


class _Server:
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def stop(self):
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("stuck")


def test_guard_stops_every_server_last_first_even_when_one_fails():
    stopped = []
    with ServerGuard() as guard:
        for name, fail in (("a", False), ("b", True), ("c", False)):
            guard.add(_Server(stopped, name, fail))
    assert stopped == ["c", "b", "a"]


@pytest.fixture
def default_sigterm():
    """SIGTERM at its default action for the test (ray.init in this process installs its own handler)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_unwinds_the_driver_and_stops_its_servers(default_sigterm):
    stopped = []
    with pytest.raises(SystemExit) as exit_info, ServerGuard() as guard:
        guard.add(_Server(stopped, "vllm"))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this returns
    assert exit_info.value.code == 128 + signal.SIGTERM and stopped == ["vllm"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_a_handler_installed_before_is_left_alone(default_sigterm):
    def handler(signum, frame):  # what ray.init installs in a driver: sys.exit(signum)
        raise SystemExit(signum)

    signal.signal(signal.SIGTERM, handler)
    stopped = []
    with pytest.raises(SystemExit) as exit_info, ServerGuard() as guard:
        guard.add(_Server(stopped, "sglang"))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert exit_info.value.code == signal.SIGTERM and stopped == ["sglang"]
    assert signal.getsignal(signal.SIGTERM) is handler

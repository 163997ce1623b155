"""The last line of defence: a tiny process that kills a server whose ServerActor died.

A ServerActor stops its server itself, and the driver stops every ServerActor on exit. But a
Ray worker can die without running any of that (``ray.kill``, a lost driver, SIGKILL, an OOM
kill), and the server, in its own process group, would outlive it holding 8 GPUs. So the
actor starts this watchdog with the read end of a pipe whose write end only the actor holds.
The kernel closes that end when the actor's process dies, however it dies; the watchdog then
reads EOF and SIGTERMs, then SIGKILLs, the server's process group (and removes its container).
A clean stop writes ``done`` first, and the watchdog exits without touching anything.

The watchdog detaches itself (double fork, own session) so that neither Ray's cleanup of the
worker's children nor a signal to the worker's process group takes it down with the actor.

    python -m raybench.backends.watchdog --fd 5 --pgid 1234 --grace-s 30 [--remove-cmd docker rm -f NAME]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

DONE = b"done"


def start_watchdog(*, pgid: int, grace_s: float, remove_argv: Sequence[str] = (), env: dict[str, str] | None = None) -> int:
    """Start a detached watchdog for process group ``pgid``; returns the pipe's write end.

    Keep the returned descriptor open for as long as the server should live; call
    ``release_watchdog`` after a clean stop.
    """
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "raybench.backends.watchdog", "--fd", str(read_fd), "--pgid", str(pgid),
            "--grace-s", str(grace_s)]
    if remove_argv:
        argv += ["--remove-cmd", *remove_argv]
    try:
        # the intermediate process forks the real watchdog and exits at once: reap it here
        subprocess.run(argv, pass_fds=(read_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True,
                       check=True, timeout=30)
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return write_fd


def release_watchdog(write_fd: int) -> None:
    """The server was stopped cleanly: tell the watchdog to exit without acting."""
    try:
        os.write(write_fd, DONE)
    except OSError:
        pass
    finally:
        os.close(write_fd)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, grace_s: float) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _watch(fd: int, pgid: int, grace_s: float, remove_cmd: list[str]) -> None:
    data = b""
    while True:
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    if data.startswith(DONE):
        return
    _kill_group(pgid, grace_s)
    if remove_cmd:
        subprocess.run(remove_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, check=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m raybench.backends.watchdog")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--pgid", type=int, required=True)
    parser.add_argument("--grace-s", type=float, required=True)
    parser.add_argument("--remove-cmd", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    if os.fork() > 0:
        os._exit(0)  # the parent returns to the actor at once; the child is re-parented
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver is not for us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        _watch(args.fd, args.pgid, args.grace_s, args.remove_cmd)
    finally:
        os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()

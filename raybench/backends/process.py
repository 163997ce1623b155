"""``ServerProcess``: one inference server as a child process, from start to a sure teardown.

The server runs in its own process group, so a stop reaches every process it forked (vLLM
and SGLang start one worker per GPU); its output goes to a log file; readiness is polled
under a deadline, and a server that exits while starting fails at once with its log's tail.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from raybench.errors import BackendError

LOG_TAIL_LINES = 50


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("r", errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines))
    except FileNotFoundError:
        return "(no log)"


class ServerProcess:
    """Starts ``argv``, waits until ``base_url`` serves ``model``, and stops it for sure.

    ``aliases`` are other names the server may list instead (trtllm-serve lists a local
    directory by its last component); once ready, ``model`` is the name it listed.
    """

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        base_url: str,
        model: str,
        log_path: Path,
        aliases: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        env_remove: Sequence[str] = (),
        ready_timeout_s: float = 600.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.aliases = tuple(a for a in aliases if a != model)
        self.log_path = log_path
        self.env = dict(env or {})
        self.env_remove = tuple(env_remove)  # inherited variables the server must not see
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_listed: list[str] | None = None  # what /v1/models listed at the last poll, for the timeout error

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def launch(self) -> int:
        """Start the process (in its own process group) without waiting; returns its pid."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={k: v for k, v in {**os.environ, **self.env}.items() if k not in self.env_remove},
                    start_new_session=True,
                )
            except OSError as err:
                raise BackendError(f"cannot start {self.name}: {self.argv[0]}: {err.strerror}") from err
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit code once the process has exited, else None (also None before launch)."""
        return None if self._proc is None else self._proc.poll()

    def wait_ready(self) -> None:
        """Block until ready; BackendError with the log's tail if it exits, is stopped or times out."""
        deadline = time.monotonic() + self.ready_timeout_s
        delay = 0.05
        while True:
            proc = self._proc
            code = None if proc is None else proc.poll()
            # stop() forgets the process before it signals it: an exit seen after that is the stop's
            if self._proc is None:
                raise BackendError(f"{self.name} was stopped while starting; last lines of {self.log_path}:\n"
                                   + log_tail(self.log_path))
            if code is not None:
                raise BackendError(
                    f"{self.name} exited with code {code} while starting; last lines of {self.log_path}:\n"
                    + log_tail(self.log_path)
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.name} not ready after {self.ready_timeout_s:g} s{self._listing_note()}; "
                    f"last lines of {self.log_path}:\n" + log_tail(self.log_path)
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                if r.status != 200:
                    return False
            with urllib.request.urlopen(self.base_url + "/v1/models", timeout=2) as r:
                models = [m.get("id") for m in json.load(r).get("data", [])]
        except (urllib.error.URLError, OSError, ValueError):
            return False
        self._last_listed = models
        listed = next((name for name in (self.model, *self.aliases) if name in models), None)
        if listed is None:
            return False
        self.model = listed
        return True

    def _listing_note(self) -> str:
        if self._last_listed is None:
            return ""
        wanted = " or ".join(repr(name) for name in (self.model, *self.aliases))
        return f" (/v1/models lists {self._last_listed}, not {wanted})"

    def stop(self) -> int | None:
        """SIGTERM the whole process group, SIGKILL it after the grace period; returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        for sig, wait_s in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # the leader may be gone while forked workers linger in the group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.poll()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

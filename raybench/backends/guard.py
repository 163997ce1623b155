"""``ServerGuard``: whatever ends a run on the driver, every server it started is stopped.

The runner stops each server in a ``finally``, which covers an exception and Ctrl-C (Python's
KeyboardInterrupt unwinds through it). Two endings skip ``finally``: SIGTERM/SIGHUP, whose
default action kills the process on the spot, and an interpreter exit from a thread that is
not the one running the cells. The guard turns SIGTERM/SIGHUP into ``SystemExit`` in the main
thread (so the ``finally`` blocks run) and registers an ``atexit`` hook that stops whatever is
still registered. A handler someone installed first is left alone: ``ray.init`` already makes
SIGTERM a ``sys.exit`` in the driver, which unwinds the same way. If the driver is SIGKILLed, Ray kills its actors, and each actor's watchdog
then kills its server (``watchdog.py``).
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stoppable(Protocol):
    def stop(self) -> None: ...


class ServerGuard:
    def __init__(self) -> None:
        self._servers: list[Stoppable] = []
        self._lock = threading.Lock()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ServerGuard:
        atexit.register(self.stop_all)
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                previous = signal.getsignal(sig)
                if previous in (signal.SIG_DFL, None):  # leave a handler someone else installed alone
                    self._previous[sig] = previous
                    signal.signal(sig, _exit_on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            self._previous.clear()
            atexit.unregister(self.stop_all)

    def add(self, server: Stoppable) -> None:
        with self._lock:
            self._servers.append(server)

    def discard(self, server: Stoppable) -> None:
        with self._lock:
            if server in self._servers:
                self._servers.remove(server)

    def stop_all(self) -> None:
        """Stop every registered server, the last started first; one failure does not spare the rest."""
        with self._lock:
            servers, self._servers = self._servers[::-1], []
        for server in servers:
            try:
                server.stop()
            except Exception:  # noqa: BLE001 (keep stopping the others; the watchdog is the fallback)
                log.exception("could not stop %r", server)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)

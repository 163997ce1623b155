"""Memory, CPU and open files of this benchmark's own processes, read from /proc (Linux).

Only descendants of the calling process are read (the local Ray cluster it started, its
load-generator actors, the simulator), so other Ray clusters on a shared machine never count.
A background thread samples every ``interval_s``; per process it keeps the first and the
largest resident set, CPU seconds at first and last sight, and the most open descriptors.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcStats:
    pid: int
    title: str
    rss_first_mb: float
    rss_max_mb: float = 0.0
    cpu_first_s: float = 0.0
    cpu_last_s: float = 0.0
    fds_max: int = 0

    @property
    def cpu_s(self) -> float:
        return self.cpu_last_s - self.cpu_first_s

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_max_mb - self.rss_first_mb


def _read(pid: int) -> tuple[int, str, float, float, int] | None:
    """(ppid, title, rss MB, cpu s, open fds) of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):  # gone, or going, between two reads
        return None
    try:
        fields = stat[stat.rindex(")") + 2:].split()
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
    except (ValueError, IndexError):
        return None
    return ppid, title, rss_pages * _PAGE / 2**20, (utime + stime) / _TICKS, fds


@dataclass
class ProcSampler:
    interval_s: float = 0.25
    root: int = field(default_factory=os.getpid)
    procs: dict[int, ProcStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        seen = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                info = _read(int(name))
                if info is not None:
                    seen[int(name)] = info
        ours = {self.root}
        changed = True
        while changed:  # descendants of root, whatever order /proc lists them in
            changed = False
            for pid, (ppid, *_rest) in seen.items():
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        for pid in ours:
            if pid not in seen:
                continue
            _, title, rss_mb, cpu_s, fds = seen[pid]
            stats = self.procs.get(pid)
            if stats is None:
                stats = self.procs[pid] = ProcStats(pid=pid, title=title, rss_first_mb=rss_mb, cpu_first_s=cpu_s)
            stats.title = title  # a Ray worker renames itself once it becomes an actor
            stats.rss_max_mb = max(stats.rss_max_mb, rss_mb)
            stats.cpu_last_s = cpu_s
            stats.fds_max = max(stats.fds_max, fds)

    def matching(self, needle: str) -> list[ProcStats]:
        return [p for p in self.procs.values() if needle in p.title]


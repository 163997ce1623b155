"""Running at the normal CPU priority inside a Ray worker.

Ray starts every worker process at niceness 15 (its ``worker_niceness`` setting), so that
tasks yield to the node's own services. For raybench that is wrong twice over: a load
generator at nice 15 gets about 1/30 of a core's time slice against any normal process (a CPU
inference server, a compile job), and every latency it stamps includes that wait; a server
started from a ServerActor inherits the niceness and yields to everything else on the GPU
node. Each of raybench's actors asks for niceness 0 when it starts. Lowering niceness needs
root or CAP_SYS_NICE; without them the actor keeps what Ray gave it, and the value is
recorded so the run can say why its client lagged.
"""

from __future__ import annotations

import os

NORMAL = 0
# the Ray setting that the workers of a local cluster get; a cluster started with
# `ray start` takes it from the same environment variable
RAY_WORKER_NICENESS_ENV = "RAY_worker_niceness"


def current() -> int:
    """The niceness of the calling thread (on Linux each thread has its own)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def run_at_normal_priority() -> int:
    """Lower the niceness of every thread of this process to 0 where allowed; the highest left.

    Every thread, not only the caller: Ray's own threads (those that answer the driver's calls)
    started at 15 too, and one of them descheduled while it holds the GIL stalls the others.
    Threads started later inherit the niceness of the thread that starts them.
    """
    left = []
    for tid in _threads():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > NORMAL:
                os.setpriority(os.PRIO_PROCESS, tid, NORMAL)
            left.append(os.getpriority(os.PRIO_PROCESS, tid))
        except OSError:  # EPERM/EACCES without root or CAP_SYS_NICE; ESRCH for a thread that just ended
            try:
                left.append(os.getpriority(os.PRIO_PROCESS, tid))
            except OSError:
                pass
    return max(left, default=current())


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread only
        return [0]


def niceness_hint(niceness: int | None) -> str:
    """What to do about a client that ran below normal priority ('' when it did not)."""
    if not niceness or niceness <= NORMAL:
        return ""
    return (f"the load generator ran at niceness {niceness} (Ray's worker default) and could not lower it; "
            f"start the cluster with {RAY_WORKER_NICENESS_ENV}=0 in the environment of `ray start`")

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
    return os.getpriority(os.PRIO_PROCESS, 0)


def run_at_normal_priority() -> int:
    """Lower this process's niceness to 0 where allowed; the niceness it runs at afterwards."""
    if current() > NORMAL:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NORMAL)
        except OSError:  # EPERM/EACCES: not root and no CAP_SYS_NICE
            pass
    return current()


def niceness_hint(niceness: int | None) -> str:
    """What to do about a client that ran below normal priority ('' when it did not)."""
    if not niceness or niceness <= NORMAL:
        return ""
    return (f"the load generator ran at niceness {niceness} (Ray's worker default) and could not lower it; "
            f"start the cluster with {RAY_WORKER_NICENESS_ENV}=0 in the environment of `ray start`")

"""Ray starts its workers at niceness 15; raybench's actors ask for 0 and record what they got."""

import os
import subprocess
import sys

import pytest

from raybench.priority import niceness_hint

_PROBE = """
import os, sys, threading
from raybench.priority import run_at_normal_priority
os.nice(15)  # as Ray's raylet starts a worker
# a thread started before the call, as Ray's own threads are: it must be lowered too
tid, go = [], threading.Event()
worker = threading.Thread(target=lambda: (tid.append(threading.get_native_id()), go.wait()))
worker.start()
while not tid:
    pass
if len(sys.argv) > 1:
    os.setuid(int(sys.argv[1]))
before = os.getpriority(os.PRIO_PROCESS, 0)
after = run_at_normal_priority()
print(before, after, os.getpriority(os.PRIO_PROCESS, tid[0]))
go.set()
"""


def _probe(uid: int | None = None) -> tuple[int, int]:
    argv = [sys.executable, "-c", _PROBE] + ([] if uid is None else [str(uid)])
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    before, after, other_thread = map(int, out.stdout.split())
    assert other_thread == after  # every thread of the process, not only the caller
    return before, after


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering niceness needs root")
def test_a_worker_started_at_niceness_15_runs_at_0():
    assert _probe() == (15, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_without_the_privilege_the_niceness_stays_and_the_hint_says_how_to_fix_it():
    before, after = _probe(uid=65534)  # nobody: may raise its niceness, never lower it
    assert (before, after) == (15, 15)
    hint = niceness_hint(after)
    assert "niceness 15" in hint and "RAY_worker_niceness=0" in hint


def test_no_hint_at_normal_priority():
    assert niceness_hint(0) == "" and niceness_hint(None) == "" and niceness_hint(-5) == ""

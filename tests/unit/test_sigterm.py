"""SIGTERM stops a running event loop the way asyncio's own Ctrl-C handling does: no task keeps it."""

import asyncio
import gc
import logging
import os
import signal

import pytest

from raybench.cli import _Terminated, handle_sigterm


@pytest.fixture
def sigterm_handler():
    previous = signal.getsignal(signal.SIGTERM)
    handle_sigterm()
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_inside_a_task_stops_the_loop_and_leaves_no_task_with_it(sigterm_handler, caplog):
    async def writer():
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while this task's step runs, as in a socket send
        for _ in range(1000):
            await asyncio.sleep(0)

    async def main():
        task = asyncio.create_task(writer())
        await asyncio.sleep(5)  # bounded: the interrupt ends it at once
        return task

    with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(_Terminated):
        asyncio.run(main())
    gc.collect()
    # raised inside the task's step, the interrupt was also stored on the task, and asyncio
    # reported it with a traceback as "Task exception was never retrieved"
    assert "never retrieved" not in caplog.text

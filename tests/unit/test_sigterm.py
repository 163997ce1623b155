"""SIGTERM stops a run the way Ctrl-C does (no task keeps the event loop), and is told apart from it: exit 143."""

import asyncio
import gc
import logging
import os
import signal
import time

import pytest
from click.testing import CliRunner, Result

from raybench.cli import _Terminated, handle_sigterm, main


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


def _invoke_with_signals(body) -> Result:
    """``raybench _signal_for_test``, a hidden command running ``body``, with Python's own SIGINT handler."""
    main.command(name="_signal_for_test", hidden=True)(body)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell starts background jobs with SIGINT ignored
    try:
        return CliRunner().invoke(main, ["_signal_for_test"])
    finally:
        main.commands.pop("_signal_for_test")
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _as_ray_get_does(signum: int) -> None:
    """What ray.get does with an interrupt raised by a handler while it waits: a plain KeyboardInterrupt."""
    try:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this returns
    except KeyboardInterrupt:
        raise KeyboardInterrupt() from None


def test_a_sigterm_that_ray_turns_into_a_plain_interrupt_still_exits_143():
    result = _invoke_with_signals(lambda: _as_ray_get_does(signal.SIGTERM))
    assert (result.exit_code, result.output) == (143, "interrupted (SIGTERM)\n")
    # the next invocation starts afresh: a Ctrl-C is a Ctrl-C, whatever came to the one before
    result = _invoke_with_signals(lambda: _as_ray_get_does(signal.SIGINT))
    assert (result.exit_code, result.output) == (130, "interrupted (Ctrl-C)\n")

"""--no-keepalive and Experiment(keepalive=False): a connection per request, checked up front."""

from __future__ import annotations

import asyncio

import pytest

from raybench.errors import ConfigError
from raybench.experiment import Experiment, Online, SimBackend
from raybench.loadgen.stamping import make_connector
from raybench.sim import FaultSpec
from raybench.sim.command import FaultParam


def experiment(**kw) -> Experiment:
    return Experiment(name="e", model="m", backends=(SimBackend(),),
                      online=(Online(concurrency=(1,), input_len=8, output_len=8, num_prompts=2),), **kw)


def test_keepalive_defaults_on_and_must_be_a_bool():
    assert experiment().keepalive is True
    assert experiment(keepalive=False).keepalive is False
    with pytest.raises(ConfigError, match="keepalive"):
        experiment(keepalive="no")


def test_no_keepalive_connector_closes_each_connection():
    async def flags():
        on, off = make_connector(4), make_connector(4, keepalive=False)
        try:
            return on.force_close, off.force_close
        finally:
            await on.close()
            await off.close()

    assert asyncio.run(flags()) == (False, True)


def test_the_close_after_fault_is_a_simulator_option():
    spec = FaultParam().convert("close_after", None, None)
    assert spec == FaultSpec(kind="close_after")
    with pytest.raises(ValueError, match="after_chunks"):
        FaultSpec(kind="close_after", after_chunks=2)

"""Fixtures for the simulator's server tests: a server factory on 127.0.0.1 port 0 and a client."""

from __future__ import annotations

import aiohttp
import pytest

from raybench.sim import SimConfig, SimServer


@pytest.fixture
async def make_sim():
    servers: list[SimServer] = []

    async def make(**overrides) -> SimServer:
        server = SimServer(SimConfig(**overrides))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client

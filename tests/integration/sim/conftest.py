"""Fixtures for the simulator's server tests: a server factory on 127.0.0.1 port 0 and a client."""

from __future__ import annotations

from time import perf_counter_ns

import aiohttp
import orjson
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


async def read_sse(resp: aiohttp.ClientResponse) -> list[tuple[int, bytes]]:
    """(perf_counter_ns on arrival, payload after 'data: ') for every SSE event of a response."""
    events, buf = [], b""
    async for data in resp.content.iter_any():
        t_ns = perf_counter_ns()
        buf += data
        while (end := buf.find(b"\n\n")) >= 0:
            event, buf = buf[:end], buf[end + 2 :]
            assert event.startswith(b"data: ")
            events.append((t_ns, event[6:]))
    return events


def completion_body(n: int, *, prompt=(1, 2, 3, 4), stream=True, usage=True, continuous=True, model=None,
                    **extra) -> bytes:
    body = {"prompt": list(prompt), "max_tokens": n, "ignore_eos": True, "temperature": 0, "stream": stream}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream_options"] = {"include_usage": usage, "continuous_usage_stats": continuous}
    body.update(extra)
    return orjson.dumps(body)


def headers(key: str) -> dict[str, str]:
    return {"X-Request-Id": key, "Content-Type": "application/json"}

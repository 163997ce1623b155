"""Client-side helpers for the simulator's server tests (a uniquely named module, not conftest,
so that `from simclient import ...` never picks up another directory's conftest)."""

from __future__ import annotations

from time import perf_counter_ns

import aiohttp
import orjson


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

"""Time stamps taken when bytes reach the connection, not when the reading coroutine wakes.

When a wave of streams gets its first tokens at once, aiohttp hands each connection's bytes to
its protocol in one loop turn, but the coroutines reading them resume one after another, each
after the previous one's parsing: stamping at resume puts the last stream a millisecond or
more late at concurrency 128. The protocol below notes the time of every read as it happens.

This reaches into one private attribute of aiohttp (the connector's protocol factory); when
it is not there, ``make_connector`` returns a plain connector and the generator stamps at
resume, as before.
"""

from __future__ import annotations

import functools
from time import perf_counter_ns

import aiohttp
from aiohttp.client_proto import ResponseHandler


class StampingResponseHandler(ResponseHandler):
    """aiohttp's response protocol, plus the time of the latest read from the socket."""

    t_data_ns = 0

    def data_received(self, data: bytes) -> None:
        if data:
            self.t_data_ns = perf_counter_ns()
        super().data_received(data)


def make_connector(limit: int, *, keepalive: bool = True) -> aiohttp.TCPConnector:
    """A connector for ``limit`` connections whose protocols stamp reads where aiohttp allows.

    ``keepalive=False`` opens a connection per request and closes it after the response.
    """
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=None, force_close=not keepalive)
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(StampingResponseHandler, *factory.args, **factory.keywords)
    return connector

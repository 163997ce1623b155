"""The simulated server: in-process (``SimServer``) or as a blocking process (``run``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pyarrow as pa

from raybench.sim.app import SimApp
from raybench.sim.config import SimConfig
from raybench.sim.httpproto import HttpConnection


class SimServer:
    """An OpenAI-compatible simulated server on the running event loop.

        server = SimServer(SimConfig(timing="fixed", ttft_ms=50))
        await server.start()          # binds config.host:config.port (0 = a free port)
        ... requests to server.url ...
        chunks = server.ground_truth_chunks()
        await server.stop()
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._app: SimApp | None = None
        self._server: asyncio.Server | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def app(self) -> SimApp:
        if self._app is None:
            raise RuntimeError("SimServer is not started; call `await server.start()` first")
        return self._app

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        app = SimApp(self.config, loop)
        self._server = await loop.create_server(
            lambda: HttpConnection(app), self.config.host, self.config.port, backlog=4096, reuse_address=True
        )
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._app = app
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.app.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def ground_truth_chunks(self) -> pa.Table:
        """One row per SSE event written (see groundtruth.CHUNKS_SCHEMA)."""
        return self.app.log.chunks_table()

    def ground_truth_requests(self) -> pa.Table:
        """One row per generation request that ended (see groundtruth.REQUESTS_SCHEMA)."""
        return self.app.log.requests_table()

    def reset_ground_truth(self) -> None:
        self.app.reset()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (about twice as fast per write), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(config: SimConfig, ready_file: str | os.PathLike[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; announce the address once listening.

    Prints ``raybench sim listening on http://HOST:PORT`` and, if ``ready_file`` is given,
    writes the port number to it (via a temporary name and a rename, so a reader never sees a
    half-written file).
    """
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(config, ready_file))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _serve(config: SimConfig, ready_file: str | os.PathLike[str] | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or Windows
            pass
    server = SimServer(config)
    await server.start()
    try:
        print(f"raybench sim listening on {server.url}", flush=True)
        if ready_file is not None:
            path = Path(ready_file)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(f"{server.port}\n")
            tmp.replace(path)
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await server.stop()

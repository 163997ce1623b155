"""``LoadGenerator``: one actor's share of a cell, on one asyncio loop and one aiohttp session.

Concurrency slots are worker coroutines that take the next request in arrival order, wait for
its arrival time, send it and read its stream. A request's ``t_scheduled`` is its arrival time
(the cell start when everything is released at once). ``t_sent`` is taken just before the
request's body is written to the socket (an aiohttp trace hook), after a slot was free. Both
reference clients start their clock after the slot too, but before the HTTP library has built
the request and found a connection; at concurrency 1024 that client overhead is much of why
their TTFT reads 200-400 ms high. raybench keeps it, as client queue time (t_sent -
t_scheduled). Connections are opened before the clock starts, one per slot, so no TCP
handshake lands inside a measurement either (unless keep-alive is off: then every request
opens its own). A request whose connection closed before any response byte is sent once more
on a fresh connection; its t_sent is then the retry's.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import os
import resource
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np
import orjson

from raybench.errors import ConfigError
from raybench.loadgen.client import ClientConfig, request_body, request_headers
from raybench.loadgen.records import STATUS_CODE, ChunkColumns, RequestColumns
from raybench.loadgen.sse import SseReader, StreamError
from raybench.loadgen.stamping import StampingResponseHandler, make_connector
from raybench.store.schema import RequestStatus
from raybench.workloads.base import RequestSpec

_ERROR_BODY_CHARS = 300
#: event-loop lag above which a cell's client-side times may carry the client's own delay
LAG_LIMIT_MS = 50.0
#: CPU share (of one core) above which a lagging generator is taken as the cause of its lag
BUSY_CPU_SHARE = 0.5
_LAG_PROBE_S = 0.1
_LAG_WINDOW = 10  # probes: the progress snapshot reports the worst lag of the last second
# What a connection closed under a request looks like before any response byte: the server
# hung up (ServerDisconnectedError), or the write of the request failed (ClientOSError,
# "Can not write request body", a reset). ClientConnectorError (no connection at all) is not one.
_CLOSED_BEFORE_RESPONSE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of one generator, cheap enough to take every second.

    ``output_tokens`` counts the tokens streamed so far, those of requests still in flight
    included, so a rate taken from two snapshots is the rate now, not the rate at which
    requests happened to finish. ``loop_lag_ms`` is the largest event-loop lag over the last
    second. ``ttft_ms_counts`` is filled in by the actor at poll time (telemetry's cumulative
    TTFT histogram of the successful requests so far); the generator leaves it empty.
    """

    total: int
    sent: int
    done: int
    failed: int
    in_flight: int
    output_tokens: int
    loop_lag_ms: float = 0.0
    ttft_ms_counts: tuple[int, ...] = ()
    # the longest any request in flight has gone without a byte (since it was sent, or since its
    # last event): a server that stopped answering shows here long before a timeout fires
    longest_silence_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SelfCheck:
    """How loaded the generator itself was: a saturated client distorts every latency."""

    cpu_s: float
    wall_s: float
    max_loop_lag_ms: float
    mean_loop_lag_ms: float
    gc_collections: int = 0  # garbage collections during the run, each a pause of the whole loop
    gc_max_pause_ms: float = 0.0
    rss_start_mb: float | None = None  # the process's resident set before the bodies were built
    rss_peak_mb: float = 0.0  # the process's peak resident set (its streams' memory included)
    niceness: int = 0  # the process's CPU niceness: above 0, any busy neighbour delays the loop

    @property
    def cpu_share(self) -> float:
        """The generator process's CPU time over the cell's wall time (1.0 = one core all along)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def verdict(self) -> ClientCheck:
        """A lagging loop is the client's own doing only when the client was busy too."""
        if self.max_loop_lag_ms <= LAG_LIMIT_MS:
            return ClientCheck.OK
        return ClientCheck.CLIENT_SATURATED if self.cpu_share >= BUSY_CPU_SHARE else ClientCheck.HOST_CONTENDED


class ClientCheck(str, enum.Enum):
    """What the load generator's self-check concluded about one cell."""

    OK = "ok"
    # the generator's loop lagged while it used most of a core: it was the bottleneck
    CLIENT_SATURATED = "client_saturated"
    # the loop lagged while the generator was mostly idle: another process had the cores
    HOST_CONTENDED = "host_contended"


class LoadGenerator:
    """Sends ``specs`` to one server and records every request and streamed event."""

    def __init__(
        self,
        *,
        cell_id: str,
        client: ClientConfig,
        specs: Sequence[RequestSpec],
        arrivals_s: Sequence[float] | np.ndarray,
        concurrency: int,
        slot_starts_s: Sequence[float] = (),
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        session_factory: Callable[[int, bool], aiohttp.ClientSession] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError.invalid("concurrency", concurrency, "an integer >= 1")
        if len(arrivals_s) != len(specs):
            raise ConfigError(f"{len(arrivals_s)} arrival times for {len(specs)} requests")
        order = np.argsort(np.asarray(arrivals_s, dtype=np.float64), kind="stable")
        self._specs = [specs[i] for i in order]
        self._arrivals_ns = (np.asarray(arrivals_s, dtype=np.float64)[order] * 1e9).astype(np.int64).tolist()
        self._rss_start_mb = _rss_mb()
        # a slot takes the next session start in arrival order; later turns follow on that slot
        self._starts, self._next_turn = session_chains(self._specs)
        self._client = client
        self._cell_id = cell_id
        self._concurrency = min(concurrency, max(1, len(specs)))
        # a ramped cap: slot k starts taking requests this long after the cell start (0: at once)
        starts = sorted(slot_starts_s)[: self._concurrency]
        self._slot_starts_ns = [int(s * 1e9) for s in starts] + [0] * (self._concurrency - len(starts))
        self._clock_ns = clock_ns
        self._session_factory = session_factory or self._default_session
        # prepared before the clock starts: the hot path only writes bytes
        self._bodies = [request_body(client, s) for s in self._specs]
        self._headers = [request_headers(client, cell_id, s.request_id) for s in self._specs]
        self._timeout = aiohttp.ClientTimeout(
            total=client.request_timeout_s, sock_read=client.stall_timeout_s
        )
        self._chunks = ChunkColumns()
        self._requests = RequestColumns()
        self._next = 0
        self._taken = 0  # requests taken by a slot, later turns of sessions included
        self._done = 0
        self._failed = 0
        self._in_flight = 0
        self._output_tokens = 0
        # readers of the requests in flight, so a progress snapshot can count their tokens
        # without any per-chunk bookkeeping
        self._active: set[SseReader] = set()
        self._lags_ns: list[int] = []
        self._session: aiohttp.ClientSession | None = None
        self._retry_session: aiohttp.ClientSession | None = None
        self._wall_ns = 0
        self._cpu_s = 0.0
        self._frozen = False
        self._gc_start_ns = 0
        self._gc_collections = 0
        self._gc_max_pause_ns = 0

    def _default_session(self, limit: int, keepalive: bool) -> aiohttp.ClientSession:
        connector = make_connector(limit, keepalive=keepalive)
        trace = aiohttp.TraceConfig()
        # not on_request_headers_sent: aiohttp buffers the headers and writes them with the
        # body from a task of its own, which at a burst of requests runs many milliseconds later
        trace.on_request_chunk_sent.append(self._on_body_sent)
        return aiohttp.ClientSession(
            connector=connector,
            read_bufsize=self._client.read_bufsize,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
            trace_configs=[trace],
        )

    async def _on_body_sent(self, session: object, ctx: types.SimpleNamespace, params: object) -> None:
        reader = ctx.trace_request_ctx
        if reader is not None and reader.t_sent_ns is None:
            reader.t_sent_ns = self._clock_ns()

    async def connect(self) -> None:
        """Open the session and one connection per slot, before the clock starts.

        Each slot's connection is opened by a GET of /v1/models, which every OpenAI-compatible
        server answers; the connections then wait, kept alive, in the pool.
        """
        if self._session is None:
            self._session = self._session_factory(self._concurrency, self._client.keepalive)
        if not self._client.keepalive:
            return  # each request opens its own connection: there is nothing to open ahead
        url = self._client.base_url + "/v1/models"

        async def touch() -> None:
            try:
                async with self._session.get(url, headers=self._client.headers) as resp:
                    await resp.read()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                pass  # the cell's requests will say what is wrong, one row each

        await asyncio.gather(*(touch() for _ in range(self._concurrency)))
        # Building the bodies left many objects behind: a full collection now, and everything
        # alive frozen out of later ones, so no 50-100 ms collection of the oldest generation
        # lands in the first burst (run() thaws them at the end).
        gc.collect()
        gc.freeze()
        self._frozen = True

    async def run(self, t_start_ns: int) -> None:
        """Send every request, the first at ``t_start_ns`` (this process's perf_counter_ns)."""
        cpu0, wall0 = _cpu_s(), self._clock_ns()
        if self._session is None:
            self._session = self._session_factory(self._concurrency, self._client.keepalive)
        session = self._session
        lag_task = asyncio.create_task(self._watch_loop_lag())
        gc.callbacks.append(self._on_gc)
        try:
            # slots are made before the start (each waits for its first request's time): making
            # a thousand tasks at the start itself would delay the first sends
            workers = [asyncio.create_task(self._slot(session, t_start_ns, t_start_ns + offset_ns))
                       for offset_ns in self._slot_starts_ns]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            gc.callbacks.remove(self._on_gc)
            if self._frozen:
                gc.unfreeze()
                self._frozen = False
            lag_task.cancel()
            self._session = None
            await session.close()
            if self._retry_session is not None:
                await self._retry_session.close()
                self._retry_session = None
            self._cpu_s = _cpu_s() - cpu0
            self._wall_ns = self._clock_ns() - wall0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start_ns = self._clock_ns()
        else:
            self._gc_collections += 1
            self._gc_max_pause_ns = max(self._gc_max_pause_ns, self._clock_ns() - self._gc_start_ns)

    async def _slot(self, session: aiohttp.ClientSession, t_start_ns: int, t_open_ns: int) -> None:
        if t_open_ns > t_start_ns:
            await self._wait_until(t_open_ns)
        await self._worker(session, t_start_ns, t_free=max(t_start_ns, t_open_ns))

    async def _worker(self, session: aiohttp.ClientSession, t_start_ns: int, t_free: int) -> None:
        """``t_free``: when this slot became free (it opens free); sends are due no earlier."""
        starts, next_turn = self._starts, self._next_turn
        while self._next < len(starts):
            i = starts[self._next]
            self._next += 1
            self._taken += 1
            t_scheduled = t_start_ns + self._arrivals_ns[i]
            await self._wait_until(t_scheduled)
            # due when both its time has come and a slot was free: waiting for the slot is
            # queue time (a closed loop's cap at work), anything after that is a late send
            t_free = await self._one(session, i, t_scheduled, max(t_scheduled, t_free))
            if next_turn is not None:
                t_free = await self._follow_session(session, next_turn[i], t_free)

    async def _follow_session(self, session: aiohttp.ClientSession, i: int, t_free: int) -> int:
        """The session's later turns: each due its think time after the previous answer ended."""
        while i >= 0:
            self._taken += 1
            t_scheduled = self._clock_ns() + int(self._specs[i].think_time_s * 1e9)
            await self._wait_until(t_scheduled)
            t_free = await self._one(session, i, t_scheduled, t_scheduled)
            i = self._next_turn[i]
        return t_free

    async def _wait_until(self, t_ns: int) -> None:
        # again after waking: uvloop's millisecond timers can fire up to 1 ms early
        while (wait_ns := t_ns - self._clock_ns()) > 0:
            await asyncio.sleep(wait_ns / 1e9)

    async def _one(self, session: aiohttp.ClientSession, i: int, t_scheduled: int, t_due: int) -> int:
        """Send request ``i`` and read its answer; returns the time its row was recorded."""
        spec = self._specs[i]
        reader = SseReader(spec.request_id)
        self._in_flight += 1
        self._active.add(reader)
        t_slot = self._clock_ns()
        attempts = 1
        try:
            status, http_status, error = await self._send(session, i, reader)
            if status is None:
                # The connection closed before any response byte (a server that closes kept-alive
                # connections): the server never answered, so the request goes once more, on a
                # connection of its own. t_sent becomes the retry's.
                self._active.discard(reader)
                reader = SseReader(spec.request_id)
                self._active.add(reader)
                attempts = 2
                status, http_status, error = await self._send(self._fresh_session(), i, reader)
                if status is None:
                    status = RequestStatus.DISCONNECTED
        except asyncio.CancelledError:
            self._record(spec, reader, t_scheduled, t_due, t_slot, RequestStatus.CANCELLED, None, "run stopped",
                         attempts)
            raise
        return self._record(spec, reader, t_scheduled, t_due, t_slot, status, http_status, error, attempts)

    async def _send(
        self, session: aiohttp.ClientSession, i: int, reader: SseReader
    ) -> tuple[RequestStatus | None, int | None, str | None]:
        """One attempt; status None when the connection closed before any response byte."""
        http_status = None
        try:
            async with session.post(
                self._client.url,
                data=self._bodies[i],
                headers=self._headers[i],
                timeout=self._timeout,
                trace_request_ctx=reader,
            ) as resp:
                http_status = resp.status
                if resp.status != 200:
                    body = (await resp.text(errors="replace"))[:_ERROR_BODY_CHARS]
                    return RequestStatus.HTTP_ERROR, http_status, f"HTTP {resp.status}: {body}"
                if self._client.stream:
                    status, error = await self._read_stream(resp, reader)
                    return status, http_status, error
                reader.complete_body(orjson.loads(await resp.read()), self._clock_ns())
                status, error = _judge_tokens(reader)
                return status, http_status, error
        except StreamError as err:
            return RequestStatus.BAD_RESPONSE, http_status, str(err)
        except orjson.JSONDecodeError as err:
            return RequestStatus.BAD_RESPONSE, http_status, f"response body is not JSON: {err}"
        except asyncio.TimeoutError:
            return RequestStatus.TIMEOUT, http_status, self._timeout_message(reader)
        except aiohttp.ClientConnectorError as err:
            return RequestStatus.DISCONNECTED, http_status, f"cannot connect to {self._client.base_url}: {err.os_error}"
        except (aiohttp.ClientError, OSError) as err:
            error = f"connection lost after {reader.seq} events: {err!r}"
            retry = http_status is None and isinstance(err, _CLOSED_BEFORE_RESPONSE)
            return (None if retry else RequestStatus.DISCONNECTED), http_status, error

    def _fresh_session(self) -> aiohttp.ClientSession:
        """The session retries go through: a new connection for each, closed after it."""
        if self._retry_session is None:
            self._retry_session = self._session_factory(self._concurrency, False)
        return self._retry_session

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, reader: SseReader
    ) -> tuple[RequestStatus, str | None]:
        content_type = resp.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            raise StreamError(
                f"asked for a stream but the server answered {content_type or 'no content type'}: "
                "is this an OpenAI-compatible endpoint?"
            )
        clock = self._clock_ns
        feed = reader.feed
        protocol = resp.connection.protocol if resp.connection is not None else None
        if isinstance(protocol, StampingResponseHandler) and clock is time.perf_counter_ns:
            # the time the bytes reached the connection (see stamping.py)
            async for data in resp.content.iter_any():
                feed(data, protocol.t_data_ns)
        else:
            async for data in resp.content.iter_any():
                feed(data, clock())
        reader.close(clock())
        if not (reader.done or reader.finished):
            return RequestStatus.DISCONNECTED, f"stream ended without [DONE] after {reader.seq} events"
        return _judge_tokens(reader)

    def _timeout_message(self, reader: SseReader) -> str:
        c = self._client
        stall = f" or no data for {c.stall_timeout_s:g} s" if c.stall_timeout_s else ""
        return f"no complete response within {c.request_timeout_s:g} s{stall} ({reader.seq} events read)"

    def _record(
        self,
        spec: RequestSpec,
        reader: SseReader,
        t_scheduled: int,
        t_due: int,
        t_slot: int,
        status: RequestStatus,
        http_status: int | None,
        error: str | None,
        attempts: int,
    ) -> int:
        """One request row; ``t_slot`` stands in for t_sent when nothing was ever sent."""
        t_sent = reader.t_sent_ns if reader.t_sent_ns is not None else t_slot
        t_done = self._clock_ns()
        self._in_flight -= 1
        self._active.discard(reader)
        self._done += 1
        if status is not RequestStatus.OK:
            self._failed += 1
        self._output_tokens += reader.tokens
        reader.flush_into(self._chunks)
        r = self._requests
        r.request_id.append(spec.request_id)
        r.session.append(spec.session)
        r.turn.append(spec.turn)
        r.prompt_tokens.append(spec.prompt_tokens)
        r.server_prompt_tokens.append(reader.prompt_tokens)
        r.max_tokens.append(spec.max_tokens)
        r.output_tokens.append(reader.output_tokens)
        r.cached_tokens.append(reader.cached_tokens)
        r.t_scheduled_ns.append(t_scheduled)
        r.t_sent_ns.append(t_sent)
        r.t_first_ns.append(reader.t_first_ns)
        r.t_done_ns.append(t_done)
        r.status.append(STATUS_CODE[status])
        r.http_status.append(http_status)
        r.error.append(error)
        r.attempts.append(attempts)
        r.send_lateness_ns.append(t_sent - t_due)
        return t_done

    async def _watch_loop_lag(self) -> None:
        while True:
            t0 = self._clock_ns()
            await asyncio.sleep(_LAG_PROBE_S)
            self._lags_ns.append(self._clock_ns() - t0 - int(_LAG_PROBE_S * 1e9))

    def drain(self) -> tuple[ChunkColumns, RequestColumns]:
        """Hand over what was recorded since the last drain. Call on the generator's loop."""
        chunks, requests = self._chunks, self._requests
        self._chunks, self._requests = ChunkColumns(), RequestColumns()
        return chunks, requests

    def progress(self) -> Progress:
        """Where the run stands; call on the generator's loop (it reads the live readers)."""
        lags = self._lags_ns[-_LAG_WINDOW:]
        return Progress(
            total=len(self._specs),
            sent=self._taken,
            done=self._done,
            failed=self._failed,
            in_flight=self._in_flight,
            output_tokens=self._output_tokens + sum(r.tokens for r in self._active),
            loop_lag_ms=max(lags) / 1e6 if lags else 0.0,
            longest_silence_ms=self._longest_silence_ns() / 1e6,
        )

    def _longest_silence_ns(self) -> int:
        now = self._clock_ns()
        last = [r.t_ns[-1] if r.t_ns else r.t_sent_ns for r in self._active if r.t_sent_ns is not None]
        return max((now - t for t in last), default=0)

    def self_check(self) -> SelfCheck:
        lags = self._lags_ns or [0]
        return SelfCheck(
            cpu_s=self._cpu_s,
            wall_s=self._wall_ns / 1e9,
            max_loop_lag_ms=max(lags) / 1e6,
            mean_loop_lag_ms=sum(lags) / len(lags) / 1e6,
            gc_collections=self._gc_collections,
            gc_max_pause_ms=self._gc_max_pause_ns / 1e6,
            rss_start_mb=self._rss_start_mb,
            rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
            niceness=os.getpriority(os.PRIO_PROCESS, 0),
        )


def _judge_tokens(reader: SseReader) -> tuple[RequestStatus, str | None]:
    """A 200 that carried no output token is not a success: nothing was generated to measure."""
    if reader.tokens > 0 or (reader.output_tokens or 0) > 0:
        return RequestStatus.OK, None
    return RequestStatus.BAD_RESPONSE, (
        f"the server answered 200 but sent no output token ({reader.seq} events, "
        f"usage.completion_tokens={reader.output_tokens})"
    )


def _rss_mb() -> float | None:
    """This process's resident set now, where /proc says it (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return None


def session_chains(specs: Sequence[RequestSpec]) -> tuple[list[int], list[int] | None]:
    """Positions that start a chain, in order, and each position's next turn (-1: none).

    A request outside a session is a chain of one; a session is one chain in turn order,
    started at its first turn's position. Without sessions the second value is None, so the
    plain path does no per-request lookup.
    """
    if all(s.session is None for s in specs):
        return list(range(len(specs))), None
    by_session: dict[int, list[int]] = {}
    starts = []
    for pos, spec in enumerate(specs):
        if spec.session is None:
            starts.append(pos)
        else:
            by_session.setdefault(spec.session, []).append(pos)
    next_turn = [-1] * len(specs)
    for positions in by_session.values():
        positions.sort(key=lambda p: specs[p].turn)
        for a, b in zip(positions, positions[1:]):
            next_turn[a] = b
    starts += [positions[0] for positions in by_session.values()]
    starts.sort()
    return starts, next_turn


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

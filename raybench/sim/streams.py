"""One generation response in flight: writes slices of a cached plan, logs them, injects faults.

The timing modes only decide *when* a step is due (``advance()``) or, in zero mode, let the
stream write as fast as flow control allows (``pump()``). Everything a client can observe,
the bytes, their ground-truth rows and the mid-stream faults, happens here.
"""

from __future__ import annotations

from array import array
from time import perf_counter_ns
from typing import TYPE_CHECKING

from raybench.sim.config import FaultKind, FaultSpec
from raybench.sim.groundtruth import EventKind, EventTable, SimStatus

if TYPE_CHECKING:
    from raybench.sim.api import GenRequest
    from raybench.sim.app import SimApp
    from raybench.sim.httpproto import HttpConnection
    from raybench.sim.responses import ResponsePlan

MALFORMED_EVENT = b"data: {not json\n\n"
MALFORMED_FRAME = b"%x\r\n%b\r\n" % (len(MALFORMED_EVENT), MALFORMED_EVENT)
MALFORMED_TABLE = EventTable(array("h", [0]), array("b", [EventKind.MALFORMED]))


class Stream:
    """Writes ``plan`` to ``conn`` step by step; see the module docstring."""

    __slots__ = (
        "app", "conn", "req", "plan", "key", "t_arrival_ns", "fault", "cut", "view", "src",
        "event", "seq", "step", "piece", "total_steps", "done", "head", "status", "engine_id",
    )

    def __init__(
        self,
        app: SimApp,
        conn: HttpConnection,
        req: GenRequest,
        plan: ResponsePlan,
        key: int,
        t_arrival_ns: int,
        head: bytes,
        fault: FaultSpec | None,
        tokens_per_chunk: int,
    ) -> None:
        self.app = app
        self.conn = conn
        self.req = req
        self.plan = plan
        self.key = key
        self.t_arrival_ns = t_arrival_ns
        self.head: bytes | None = head
        self.fault = fault
        self.cut: int | None = None
        if fault is not None and fault.kind in (FaultKind.DROP, FaultKind.STALL, FaultKind.MALFORMED):
            # act before the last event at the latest, so the fault always shows
            self.cut = min(fault.after_chunks, plan.num_events - 1)
        self.view = memoryview(plan.body)
        self.src = app.log.source(plan.events)
        self.event = 0
        self.seq = 0
        self.step = 0
        self.piece = 0
        self.total_steps = -(-plan.output_tokens // tokens_per_chunk)
        self.done = False
        self.status = SimStatus.OK
        self.engine_id = -1

    # -- driven by the timing modes ------------------------------------------------------------
    def send_head(self) -> None:
        """Headers go out at once for streams, as a real server's do (fixed / engine modes)."""
        if self.head is not None and self.plan.stream:
            self.conn.transport.write(self.head)
            self.head = None

    def report_cached(self, cached_tokens: int) -> None:
        """The engine served ``cached_tokens`` of the prompt from its prefix cache: the final
        usage says so. Plans with and without it differ only there, so the events already
        written end where the new plan's start."""
        if cached_tokens and not self.done:
            plan = self.app.plans.get(self.req, self.plan.output_tokens, self.app.config.tokens_per_chunk,
                                      cached_tokens)
            self.plan, self.view = plan, memoryview(plan.body)

    def advance(self) -> bool:
        """One engine step's tokens are ready; returns True while more steps are due."""
        if self.done:
            return False
        j = self.step
        self.step += 1
        if self.plan.stream:
            steps = self.plan.step_events
            self._write(steps[j], steps[j + 1])
        elif self.step >= self.total_steps:
            self._write_whole()
        return not self.done

    def pump(self) -> None:
        """Zero mode: write the pieces of the plan while the transport accepts data."""
        if not self.plan.stream:
            self._write_whole()
            return
        pieces = self.plan.pieces
        conn = self.conn
        while not self.done and not conn.paused and self.piece < len(pieces):
            a, b = pieces[self.piece]
            self.piece += 1
            self._write(a, b)

    def lost(self) -> None:
        """The connection went away before the response ended."""
        if not self.done:
            self._finish(SimStatus.DISCONNECTED)

    # -- writing -------------------------------------------------------------------------------
    def _write_whole(self) -> None:
        if self.conn.transport.is_closing():
            self.lost()
            return
        head, self.head = self.head, None
        self.conn.transport.writelines([head or b"", self.plan.body])
        # no SSE event (the ground truth logs none either), but its tokens count in /metrics and /sim/stats
        self.app.count_written(0, self.plan.output_tokens)
        self._finish(SimStatus.OK, output_tokens=self.plan.output_tokens)

    def _write(self, a: int, b: int) -> None:
        if self.conn.transport.is_closing():  # the peer left; connection_lost is on its way
            self.lost()
            return
        cut = self.cut
        if cut is not None and cut < b:
            if a < cut:
                self._emit(a, cut)
            self.cut = None
            if not self._act_fault():
                return
            a = cut
        if a < b:
            self._emit(a, b)
        if b == self.plan.num_events:
            self._finish(self.status)

    def _emit(self, a: int, b: int) -> None:
        plan = self.plan
        data = self.view[plan.event_bytes[a] : plan.event_bytes[b]]
        head = self.head
        t_ns = perf_counter_ns()
        if head is None:
            self.conn.transport.write(data)
        else:
            self.head = None
            self.conn.transport.writelines([head, data])
        self.app.log.events(self.key, self.seq, t_ns, self.src, a, b - a)
        self.seq += b - a
        self.event = b
        self.app.count_written(b - a, plan.cum_tokens[b] - plan.cum_tokens[a])

    def _act_fault(self) -> bool:
        """Apply the mid-stream fault at the cut; False when the stream ends here."""
        kind = self.fault.kind
        if kind is FaultKind.DROP:
            self._finish(SimStatus.DISCONNECTED, close=True)
            return False
        if kind is FaultKind.STALL:
            self._finish(SimStatus.STALLED, hold=True)
            return False
        head, self.head = self.head, None
        t_ns = perf_counter_ns()
        self.conn.transport.writelines([head or b"", MALFORMED_FRAME])
        self.app.log.events(self.key, self.seq, t_ns, self.app.log.source(MALFORMED_TABLE), 0, 1)
        self.seq += 1
        self.status = SimStatus.BAD_RESPONSE
        return True

    def _finish(self, status: SimStatus, *, output_tokens: int | None = None, close: bool = False,
                hold: bool = False) -> None:
        self.done = True
        if output_tokens is None:
            output_tokens = self.plan.cum_tokens[self.event]
        self.app.stream_ended(self, status, output_tokens)
        if close:
            self.conn.close()
        elif hold:
            self.conn.hold()
        elif self.fault is not None and self.fault.kind is FaultKind.CLOSE_AFTER and status == SimStatus.OK:
            self.conn.close_after_response()
        elif status != SimStatus.DISCONNECTED:
            self.conn.response_done()

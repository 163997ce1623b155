"""What the terminal shows while a plan runs: a live line per cell, the plan's progress, a final table.

On a terminal the two bottom lines are redrawn in place (ANSI cursor-up and clear), and every
message the runner prints lands above them. Anywhere else (CI, a log file, a test collecting
lines) the same facts come as plain lines, at most one per cell every few seconds.

The display is fed the pool's ``Progress`` snapshots (about one a second); it reads only
plain attributes from them (done, total, failed, in_flight, output_tokens, ttft_ms_counts,
longest_silence_ms), so it imports nothing from the load generator. A request in flight that
has had no byte for ``no_answer_hint_s`` (a minute by default) adds a hint to the cell's line
naming the flags that bound such a wait. Every line passes through ``redact_text``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from raybench.redaction import redact_text
from raybench.telemetry.client_metrics import median_from_counts

_RATE_WINDOW_S = 5.0  # "tok/s now" is the rate over the last few seconds
_PLAIN_EVERY_S = 5.0
_BAR_WIDTH = 20
NO_ANSWER_HINT_S = 60.0


@dataclass
class _CellState:
    cell_id: str
    total: int
    t_start_s: float
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    tokens_per_s: float = 0.0
    ttft_median_ms: float | None = None
    finished: bool = False
    silence_s: float = 0.0  # the longest a request in flight has gone without a byte
    hint_after_s: float | None = NO_ANSWER_HINT_S


class ProgressDisplay:
    """Progress for a plan of cells; also a ``report`` callable (``display("a line")``).

    ``live`` draws in place on ``stream``; otherwise lines go to ``report`` (or ``stream``).
    """

    def __init__(
        self,
        *,
        report: Callable[[str], None] | None = None,
        stream: TextIO | None = None,
        live: bool = False,
        clock_s: Callable[[], float] = time.monotonic,
        plain_every_s: float = _PLAIN_EVERY_S,
        no_answer_hint_s: float | None = NO_ANSWER_HINT_S,
    ) -> None:
        if live and stream is None:
            raise ValueError("a live display needs a stream to draw on")
        if no_answer_hint_s is not None and not no_answer_hint_s > 0:
            raise ValueError(f"no_answer_hint_s={no_answer_hint_s!r} is not allowed: seconds > 0, or None for no hint")
        self._no_answer_hint_s = no_answer_hint_s
        self._stream = stream
        self._report = report or (lambda line: print(line, file=stream or sys.stdout, flush=True))
        self.live = live
        self._clock_s = clock_s
        self._plain_every_s = plain_every_s
        self._t0_s = clock_s()
        self._totals: dict[str, int] = {}
        self._cells: dict[str, _CellState] = {}
        self._current: _CellState | None = None
        self._drawn_lines = 0
        self._closed = False  # after finish(): the live lines are gone for good

    @classmethod
    def for_stream(cls, stream: TextIO, **kwargs: Any) -> ProgressDisplay:
        """Live when ``stream`` is a terminal (and TERM is not dumb), plain lines otherwise."""
        live = stream.isatty() and os.environ.get("TERM", "") != "dumb"
        return cls(stream=stream, live=live, **kwargs)

    # -- messages ---------------------------------------------------------------------------
    def __call__(self, text: str) -> None:
        """Print a message (a status line, a summary table) above the live lines."""
        text = redact_text(text)
        if not self.live:
            self._report(text)
            return
        self._erase()
        self._stream.write(text + "\n")
        self._draw()

    # -- the plan ---------------------------------------------------------------------------
    def plan(self, cells: Sequence[tuple[str, int]], *, done: Sequence[str] = ()) -> None:
        """The cells to run, with their number of requests; ``done`` are already complete."""
        skip = set(done)
        self._totals = {cell_id: total for cell_id, total in cells if cell_id not in skip}
        self._t0_s = self._clock_s()
        self._closed = False
        if skip:
            self(f"plan: {len(self._totals)} cells to run, {len(skip & {c for c, _ in cells})} already complete")

    def cell(self, cell_id: str, total: int) -> Callable[[Any], None]:
        """Start a cell; returns the ``on_progress`` callback for its pool."""
        state = _CellState(cell_id=cell_id, total=total, t_start_s=self._clock_s(), hint_after_s=self._no_answer_hint_s)
        self._totals.setdefault(cell_id, total)
        self._cells[cell_id] = self._current = state
        samples: deque[tuple[float, int]] = deque()
        last_line = [state.t_start_s]

        def on_progress(p: Any) -> None:
            now = self._clock_s()
            samples.append((now, p.output_tokens))
            while len(samples) > 2 and now - samples[0][0] > _RATE_WINDOW_S:
                samples.popleft()
            (t_a, tok_a), (t_b, tok_b) = samples[0], samples[-1]
            state.tokens_per_s = (tok_b - tok_a) / (t_b - t_a) if t_b > t_a else 0.0
            state.total, state.done, state.failed, state.in_flight = p.total, p.done, p.failed, p.in_flight
            state.ttft_median_ms = median_from_counts(p.ttft_ms_counts)
            hinted = _no_answer_hint(state) is not None
            state.silence_s = getattr(p, "longest_silence_ms", 0.0) / 1e3
            first_hint = not hinted and _no_answer_hint(state) is not None
            if self.live:
                self._erase()
                self._draw()
            elif first_hint or now - last_line[0] >= self._plain_every_s:
                last_line[0] = now
                self._report(redact_text(f"  {_cell_line(state)}"))

        return on_progress

    def cell_done(self, cell_id: str) -> None:
        state = self._cells.get(cell_id)
        if state is None:  # a cell without streaming progress (offline engine)
            state = self._cells[cell_id] = _CellState(cell_id, self._totals.get(cell_id, 0), self._clock_s())
        state.finished, state.done = True, max(state.done, state.total)
        if self._current is state:
            self._current = None
        self(f"plan: {self._plan_line()}")

    def finish(self, summaries: Sequence[Mapping[str, Any]]) -> None:
        """The final table, one row per cell of the run dir; the live lines end here."""
        self._current, self._closed = None, True
        if self.live:
            self._erase()
            self._stream.flush()
        if summaries:
            self(format_final_table(summaries))

    # -- drawing ------------------------------------------------------------------------------
    def _plan_line(self) -> str:
        finished = sum(1 for s in self._cells.values() if s.finished and s.cell_id in self._totals)
        requests = sum(min(s.done, s.total) for s in self._cells.values() if s.cell_id in self._totals)
        total = sum(self._totals.values())
        return (f"{finished}/{len(self._totals)} cells, {requests:,}/{total:,} requests, "
                f"elapsed {_hms(self._clock_s() - self._t0_s)}")

    def _lines(self) -> list[str]:
        if self._closed:
            return []
        lines = []
        if self._current is not None:
            s = self._current
            lines.append(f"{_bar(s.done, s.total)} {_cell_line(s, hint=False)}")
            hint = _no_answer_hint(s)
            if hint is not None:  # a line of its own: the end of a long line is cut at the terminal's width
                lines.append(f"  {hint}")
        if self._totals:
            total = sum(self._totals.values())
            requests = sum(min(s.done, s.total) for s in self._cells.values() if s.cell_id in self._totals)
            lines.append(f"{_bar(requests, total)} plan: {self._plan_line()}")
        width = max(20, self._columns() - 1)
        return [redact_text(line)[:width] for line in lines]  # a wrapped line would break the redraw

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size((100, 20)).columns

    def _draw(self) -> None:
        lines = self._lines()
        if lines:
            self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()
        self._drawn_lines = len(lines)

    def _erase(self) -> None:
        if self._drawn_lines:
            self._stream.write(f"\x1b[{self._drawn_lines}A\x1b[J")
            self._drawn_lines = 0


def _cell_line(s: _CellState, *, hint: bool = True) -> str:
    ttft = "n/a" if s.ttft_median_ms is None else f"{s.ttft_median_ms:,.0f} ms"
    line = (f"{s.cell_id}: {s.done}/{s.total} done, {s.in_flight} in flight, {s.failed} failed, "
            f"{s.tokens_per_s:,.0f} output tok/s, median TTFT {ttft}")
    text = _no_answer_hint(s) if hint else None
    return line if text is None else f"{line}; {text}"


def _no_answer_hint(s: _CellState) -> str | None:
    if s.hint_after_s is None or s.in_flight == 0 or s.silence_s < s.hint_after_s:
        return None
    # short enough for an 80-column terminal: it names the flags; their help says the rest
    return f"a request has had no answer for {s.silence_s:,.0f} s: see --stall-timeout, --request-timeout"


def _bar(done: int, total: int) -> str:
    filled = 0 if total <= 0 else min(_BAR_WIDTH, round(_BAR_WIDTH * done / total))
    return "[" + "#" * filled + "." * (_BAR_WIDTH - filled) + "]"


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


_COLUMNS = (  # header, summary field(s) tried in order, format
    ("ok", ("completed", "num_requests"), "{:,}"),
    ("failed", ("failed",), "{:,}"),
    ("duration s", ("duration_s", "elapsed_s"), "{:,.1f}"),
    ("out tok/s", ("output_throughput_tokens_per_s", "output_tokens_per_s"), "{:,.0f}"),
    ("total tok/s", ("total_throughput_tokens_per_s", "tokens_per_second"), "{:,.0f}"),
    ("TTFT p50 ms", ("median_ttft_ms",), "{:,.1f}"),
    ("TPOT p50 ms", ("median_tpot_ms",), "{:,.1f}"),
    ("ITL p50 ms", ("median_itl_ms",), "{:,.1f}"),
)


def _check_note(summary: Mapping[str, Any]) -> str:
    if summary.get("client_saturated"):
        return " (client saturated)"
    if summary.get("host_contended"):
        return " (host contended)"
    if (summary.get("prompts_sent_before") or {}).get("flagged"):
        return " (prompts sent before)"
    return ""


def _outcome_mark(summary: Mapping[str, Any]) -> str:
    """An incomplete or failed cell is marked beside its name, with the requests it recorded."""
    outcome = summary.get("outcome")
    if outcome in (None, "complete"):
        return ""
    return f" ({str(outcome).upper()}: {summary.get('recorded_requests')}/{summary.get('planned_requests')} requests)"


def format_final_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """One row per cell: what a reader compares across cells at a glance."""
    header = ["cell", *(c[0] for c in _COLUMNS)]
    rows = [header]
    for s in summaries:
        row = [str(s.get("cell_id", "?")) + _check_note(s) + _outcome_mark(s)]
        for _, keys, fmt in _COLUMNS:
            value = next((s[k] for k in keys if s.get(k) is not None), None)
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    rule = "-" * len(lines[0])
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])

"""The terminal display: redrawn in place on a terminal (a real pseudo-terminal here), plain lines elsewhere."""

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios

import numpy as np
import pytest

from raybench.loadgen.generator import Progress
from raybench.telemetry.client_metrics import PROGRESS_TTFT_EDGES_MS, CumulativeHistogram
from raybench.telemetry.progress import ProgressDisplay, format_final_table

SUMMARIES = [
    {"cell_id": "sim-c8", "completed": 10, "failed": 0, "duration_s": 6.61, "output_throughput_tokens_per_s": 151.3,
     "total_throughput_tokens_per_s": 175.9, "median_ttft_ms": 200.4, "median_tpot_ms": 20.01, "median_itl_ms": 19.9},
    {"cell_id": "sim-offline-b4", "num_requests": 4, "elapsed_s": 1.5, "output_tokens_per_s": 1000.0,
     "tokens_per_second": 1200.0},
]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def ttft_counts(*values_ms):
    h = CumulativeHistogram(PROGRESS_TTFT_EDGES_MS)
    h.add(np.array(values_ms, dtype=float))
    return tuple(h.counts.tolist())


def feed(display, clock, seconds, total=10):
    """TTFTs of 200 ms, shown as 205: the middle of their bucket (40 per decade)."""
    on_progress = display.cell("sim-c8", total)
    for s in range(1, seconds + 1):
        clock.t += 1.0
        done = min(total, s)
        on_progress(Progress(total=total, sent=min(total, s + 2), done=done, failed=1 if s >= 3 else 0,
                             in_flight=2, output_tokens=100 * s, ttft_ms_counts=ttft_counts(*[200.0] * done)))


def test_plain_lines_every_few_seconds_then_the_plan_and_the_final_table():
    lines, clock = [], Clock()
    display = ProgressDisplay(report=lines.append, clock_s=clock)
    display.plan([("sim-c8", 10), ("sim-offline-b4", 4), ("old", 3)], done=["old"])
    feed(display, clock, 6)
    display("a summary table")
    display.cell_done("sim-c8")
    display.cell_done("sim-offline-b4")  # a cell that streamed no progress
    display.finish(SUMMARIES)
    assert lines[0] == "plan: 2 cells to run, 1 already complete"
    assert lines[1] == "  sim-c8: 5/10 done, 2 in flight, 1 failed, 100 output tok/s, median TTFT 205 ms"
    assert lines[2:5] == ["a summary table", "plan: 1/2 cells, 10/14 requests, elapsed 0:00:06",
                          "plan: 2/2 cells, 14/14 requests, elapsed 0:00:06"]
    assert lines[5] == format_final_table(SUMMARIES) and len(lines) == 6
    assert not any("\x1b" in line for line in lines)


def test_the_final_table_has_a_row_per_cell_and_dashes_where_a_figure_does_not_apply():
    rows = format_final_table(SUMMARIES).splitlines()
    assert rows[1].split() == ["cell", "ok", "failed", "duration", "s", "out", "tok/s", "total", "tok/s",
                               "TTFT", "p50", "ms", "TPOT", "p50", "ms", "ITL", "p50", "ms"]
    assert rows[3].split() == ["sim-c8", "10", "0", "6.6", "151", "176", "200.4", "20.0", "19.9"]
    assert rows[4].split() == ["sim-offline-b4", "4", "-", "1.5", "1,000", "1,200", "-", "-", "-"]


def render(output: str) -> list[str]:
    """What a terminal shows after ``output``: just enough of VT100 for the display's codes."""
    screen, row = [""], 0
    for token in re.split(r"(\x1b\[\d*[AJ]|\r|\n)", output):
        if token == "\n":
            row += 1
            if row == len(screen):
                screen.append("")
        elif token == "\r" or not token:
            continue
        elif token.startswith("\x1b["):
            if token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
            else:  # J: clear from the cursor's line down (the cursor is at a line start)
                del screen[row + 1:]
                screen[row] = ""
        else:
            screen[row] += token
    return [line for line in screen if line]


def test_a_terminal_gets_two_lines_redrawn_in_place_and_messages_above_them(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    stream = open(slave, "w", encoding="utf-8", closefd=True)
    clock = Clock()
    display = ProgressDisplay.for_stream(stream, clock_s=clock)
    assert display.live
    display.plan([("sim-c8", 10), ("next", 10)])
    display("cell sim-c8")
    feed(display, clock, 3)
    mid_screen = render(_drain(master))
    assert mid_screen == [
        "cell sim-c8",
        "[######..............] sim-c8: 3/10 done, 2 in flight, 1 failed, 100 output tok/s, median TTFT 205 ms",
        "[###.................] plan: 0/2 cells, 3/20 requests, elapsed 0:00:03",
    ]
    feed(display, clock, 10)  # the same cell again from 0: its line is replaced, never repeated
    display("the cell's summary table")
    display.cell_done("sim-c8")
    display.finish(SUMMARIES[:1])
    stream.close()
    output = _drain(master)
    assert "\x1b[2A\x1b[J" in output  # erased by moving up over the two lines, then redrawn
    screen = render(output)
    table = format_final_table(SUMMARIES[:1]).splitlines()
    assert screen[0] == "the cell's summary table"
    assert screen[1] == "plan: 1/2 cells, 10/20 requests, elapsed 0:00:13"
    assert screen[2:2 + len(table)] == table
    assert len(screen) == 2 + len(table)  # finish() leaves no live line behind
    os.close(master)


def _drain(master: int) -> str:
    chunks = []
    while True:
        try:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                break
            data = os.read(master, 65536)
        except OSError:  # EIO: the slave side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def test_a_pipe_or_a_dumb_terminal_gets_plain_lines(monkeypatch):
    assert not ProgressDisplay.for_stream(io.StringIO()).live
    monkeypatch.setenv("TERM", "dumb")
    master, slave = pty.openpty()
    with open(slave, "w", closefd=True) as stream:
        assert not ProgressDisplay.for_stream(stream).live
    os.close(master)
    with pytest.raises(ValueError, match="stream"):
        ProgressDisplay(live=True)


def test_the_final_table_marks_a_cell_that_is_not_complete():
    lost = {**SUMMARIES[0], "cell_id": "sim-c4", "outcome": "incomplete", "recorded_requests": 12,
            "planned_requests": 32, "median_ttft_ms": None}
    rows = format_final_table([SUMMARIES[0], lost]).splitlines()
    assert rows[3].split()[0] == "sim-c8" and "INCOMPLETE" not in rows[3]
    assert rows[4].startswith("sim-c4 (INCOMPLETE: 12/32 requests)")
    assert rows[4].split()[-3] == "-"  # no TTFT sample: a dash, not 0


def _silent(display, clock, silences_s, *, in_flight=2):
    on_progress = display.cell("sim-c8", 100)
    for silence in silences_s:
        clock.t += 1.0
        on_progress(Progress(total=100, sent=100, done=98, failed=0, in_flight=in_flight, output_tokens=5000,
                             longest_silence_ms=silence * 1e3))


def test_a_request_with_no_answer_for_a_minute_gets_a_hint_naming_the_timeouts():
    lines, clock = [], Clock()
    display = ProgressDisplay(report=lines.append, clock_s=clock, plain_every_s=1000.0)
    _silent(display, clock, [10, 59, 61, 62])
    # printed at once when it first applies (not at the next plain line), then at the usual pace
    assert len(lines) == 1 and lines[0].startswith("  sim-c8: 98/100 done, 2 in flight")
    assert lines[0].endswith("; a request has had no answer for 61 s: see --stall-timeout, --request-timeout")


def test_the_no_answer_hint_is_configurable_and_needs_a_request_in_flight():
    lines, clock = [], Clock()
    display = ProgressDisplay(report=lines.append, clock_s=clock, plain_every_s=1.0, no_answer_hint_s=5.0)
    _silent(display, clock, [4, 6])
    assert "no answer" not in lines[0] and "no answer for 6 s" in lines[1]
    lines.clear()
    _silent(display, clock, [600], in_flight=0)  # nothing in flight: nothing to wait for
    assert lines and not any("no answer" in line for line in lines)
    lines.clear()
    quiet = ProgressDisplay(report=lines.append, clock_s=clock, plain_every_s=1.0, no_answer_hint_s=None)
    _silent(quiet, clock, [600])
    assert lines and not any("no answer" in line for line in lines)
    with pytest.raises(ValueError, match="no_answer_hint_s=0"):
        ProgressDisplay(report=lines.append, no_answer_hint_s=0)


def test_every_message_is_redacted():
    lines = []
    ProgressDisplay(report=lines.append)("cannot reach http://user:secret@10.0.0.1:8000/v1?api_key=sk-1&n=2")
    assert lines == ["cannot reach http://<redacted>@10.0.0.1:8000/v1?api_key=<redacted>&n=2"]


def test_on_a_terminal_the_no_answer_hint_is_a_line_of_its_own(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    stream = open(slave, "w", encoding="utf-8", closefd=True)
    clock = Clock()
    display = ProgressDisplay.for_stream(stream, clock_s=clock)
    display.plan([("sim-c8", 100)])
    _silent(display, clock, [75])
    screen = render(_drain(master))
    stream.close()
    os.close(master)
    assert screen[1] == "  a request has had no answer for 75 s: see --stall-timeout, --request-timeout"
    assert screen[0].startswith("[") and "no answer" not in screen[0]

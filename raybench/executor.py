"""The seam between the runner and the ways a cell can run.

A cell runs over HTTP against a server (load-generator actors), in a backend's in-process
engine (offline), or, later, in virtual time in the simulator's engine core. Each is a
``CellExecutor``: it writes the cell's rows into ``cell_dir`` and returns the same ``CellRun``
(summary and outcome), so the runner, resume, plan, analysis, compare and report never ask
which one ran. An executor raises ``RunError`` or ``BackendError`` when the cell could not be
measured at all; the runner then records the cell as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from raybench.experiment import Cell
from raybench.store.outcome import CellOutcome


@dataclass(frozen=True, kw_only=True)
class CellRun:
    """What running one cell gives: its summary fields and whether every request has a row."""

    summary: dict[str, Any]
    outcome: CellOutcome


class CellExecutor(Protocol):
    def run(self, cell: Cell, cell_dir: Path) -> CellRun: ...

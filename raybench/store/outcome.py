"""A cell's outcome: whether every planned request is accounted for, and if not, why.

"summary.json exists" is not "the cell is complete": a load generator lost mid-cell, a cell
deadline or a crashed server all leave a summary over fewer rows than were planned. The
outcome is judged from the rows themselves (one row per planned request id, each with a
status) and recorded in the cell's summary, so resume, plan, compare and the report read one
field instead of guessing from files.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raybench.errors import ConfigError


class OutcomeKind(str, enum.Enum):
    """How a cell ended; only ``complete`` cells are skipped by a resume and used by compare."""

    COMPLETE = "complete"  # one row per planned request, each with a status (failed requests included)
    INCOMPLETE = "incomplete"  # it ran, but some planned requests have no row (lost actors, deadline, crash)
    FAILED = "failed"  # it could not run or measure at all (server died, no row recorded)


@dataclass(frozen=True, kw_only=True)
class CellOutcome:
    """``planned_requests`` and ``recorded_requests`` count distinct request ids."""

    kind: OutcomeKind
    planned_requests: int
    recorded_requests: int
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OutcomeKind(self.kind))
        if self.planned_requests < 0 or self.recorded_requests < 0:
            raise ConfigError.invalid("requests", (self.planned_requests, self.recorded_requests), "counts >= 0")
        if self.kind is not OutcomeKind.COMPLETE and not self.reason:
            raise ConfigError.invalid("reason", self.reason, f"a reason for a {self.kind.value} cell")

    @property
    def complete(self) -> bool:
        return self.kind is OutcomeKind.COMPLETE

    @property
    def missing_requests(self) -> int:
        return max(0, self.planned_requests - self.recorded_requests)

    def fields(self) -> dict[str, Any]:
        """The flat summary.json / summary.parquet fields."""
        return {
            "outcome": self.kind.value,
            "outcome_reason": self.reason,
            "planned_requests": self.planned_requests,
            "recorded_requests": self.recorded_requests,
            "missing_requests": self.missing_requests,
        }

    def line(self, cell_id: str) -> str:
        text = f"cell {cell_id}: {self.kind.value}, {self.recorded_requests} of {self.planned_requests} requests recorded"
        return f"{text} ({self.reason})" if self.reason else text


def judge(planned_ids: Iterable[int], recorded_ids: Iterable[int], *, why_missing: str | None = None) -> CellOutcome:
    """Complete when every planned id has exactly one row and no row is foreign to the plan.

    ``why_missing`` is what the caller knows about missing rows (an actor lost, the deadline);
    duplicates or foreign ids mean the rows cannot be trusted, so the cell is incomplete too.
    """
    planned = set(planned_ids)
    recorded = list(recorded_ids)
    seen = set(recorded)
    missing = planned - seen
    problems = []
    if missing:
        problems.append(f"{len(missing)} planned requests have no row" + (f": {why_missing}" if why_missing else ""))
    if len(recorded) != len(seen):
        problems.append(f"{len(recorded) - len(seen)} duplicate rows")
    foreign = seen - planned
    if foreign:
        problems.append(f"{len(foreign)} rows for request ids outside the plan")
    recorded_n = len(seen & planned)
    if not problems:
        return CellOutcome(kind=OutcomeKind.COMPLETE, planned_requests=len(planned), recorded_requests=recorded_n)
    kind = OutcomeKind.FAILED if recorded_n == 0 else OutcomeKind.INCOMPLETE
    return CellOutcome(kind=kind, planned_requests=len(planned), recorded_requests=recorded_n,
                       reason="; ".join(problems))


def outcome_of(summary: Mapping[str, Any]) -> CellOutcome:
    """The outcome a summary.json records; ConfigError naming the field a damaged summary got wrong.

    Summaries written before outcomes existed are judged by what they did record: requests
    not recorded or lost actors make them incomplete, anything else counts as complete.
    """
    if not isinstance(summary, Mapping):
        raise ConfigError(f"a cell summary is a JSON object, not a {type(summary).__name__}")
    if "outcome" in summary:
        kinds = [k.value for k in OutcomeKind]
        if summary["outcome"] not in kinds:  # a list, not a set: the value may be unhashable
            raise ConfigError.invalid("outcome", summary["outcome"], ", ".join(kinds))
        return CellOutcome(kind=summary["outcome"], planned_requests=_count(summary, "planned_requests"),
                           recorded_requests=_count(summary, "recorded_requests"),
                           reason=summary.get("outcome_reason") or None)
    recorded = _count(summary, "num_prompts") or _count(summary, "num_requests")
    missing = _count(summary, "requests_not_recorded")
    lost = _count(summary, "lost_actors")
    if missing > 0 or lost > 0:
        return CellOutcome(kind=OutcomeKind.INCOMPLETE, planned_requests=recorded + max(missing, 0),
                           recorded_requests=recorded,
                           reason=f"written before outcomes were recorded: {missing} requests not recorded, {lost} actors lost")
    return CellOutcome(kind=OutcomeKind.COMPLETE, planned_requests=recorded, recorded_requests=recorded)


def _count(summary: Mapping[str, Any], key: str) -> int:
    """A count field (missing or null: 0)."""
    value = summary.get(key) or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError.invalid(key, value, "a count of requests (an integer >= 0)") from None

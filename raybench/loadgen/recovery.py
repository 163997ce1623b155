"""What a lost load generator leaves behind, and what its replacement takes over.

An actor sends its shard in arrival order (``LoadGenerator`` sorts it, stably), so the driver
knows which of its requests had been taken by a slot from the last ``sent`` count it saw:

- taken and recorded: the rows it had handed over are kept;
- taken, not recorded: in flight when it died (or finished since the last poll, whose rows died
  with it): each becomes a ``disconnected`` row, since its stream is gone;
- not taken: never sent, so they run on a replacement actor under the same request ids.

A request taken after the last poll is counted as not taken and sent again by the replacement;
the server may then see it twice, the cell still gets exactly one row for it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raybench.loadgen.records import STATUS_CODE, RequestColumns, requests_batch
from raybench.store.schema import RequestStatus
from raybench.workloads.base import Workload


def arrival_order(ids: Sequence[int], arrivals_s: np.ndarray) -> tuple[int, ...]:
    """``ids`` in the order a generator sends them (by arrival time, ties in id order)."""
    order = np.argsort(np.asarray(arrivals_s, dtype=np.float64), kind="stable")
    return tuple(int(ids[i]) for i in order)


@dataclass(frozen=True, kw_only=True)
class Leftover:
    """A lost actor's requests that have no row yet, split by whether they were sent."""

    in_flight: tuple[int, ...]
    unsent: tuple[int, ...]


def leftover(ordered_ids: Sequence[int], sent: int, recorded: Collection[int]) -> Leftover:
    """Split the requests of a lost actor (``ordered_ids`` in send order, ``sent`` taken so far)."""
    sent = max(0, min(sent, len(ordered_ids)))
    return Leftover(
        in_flight=tuple(i for i in ordered_ids[:sent] if i not in recorded),
        unsent=tuple(i for i in ordered_ids[sent:] if i not in recorded),
    )


def lost_rows(
    *,
    cell_id: str,
    actor: str,
    node: str,
    workload: Workload,
    request_ids: Sequence[int],
    t_scheduled_ns: Sequence[int],
    t_lost_ns: int,
    why: str,
) -> pa.RecordBatch:
    """``disconnected`` rows for requests that were in flight on a lost actor (driver time base).

    Their send time died with the actor: ``t_sent_ns`` is the scheduled time, ``t_done_ns`` the
    time the loss was seen.
    """
    cols = RequestColumns()
    code = STATUS_CODE[RequestStatus.DISCONNECTED]
    for spec, t_scheduled in zip(workload.build(request_ids), t_scheduled_ns):
        cols.request_id.append(spec.request_id)
        cols.prompt_tokens.append(spec.prompt_tokens)
        cols.server_prompt_tokens.append(None)
        cols.max_tokens.append(spec.max_tokens)
        cols.output_tokens.append(None)
        cols.cached_tokens.append(None)
        cols.t_scheduled_ns.append(int(t_scheduled))
        cols.t_sent_ns.append(int(t_scheduled))
        cols.t_first_ns.append(None)
        cols.t_done_ns.append(max(int(t_scheduled), t_lost_ns))
        cols.status.append(code)
        cols.http_status.append(None)
        cols.error.append(f"load generator {actor} was lost mid-request ({why}); its stream is gone")
        cols.attempts.append(1)
    return requests_batch(cols, cell_id, actor, node, 0)

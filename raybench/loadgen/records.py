"""Column buffers the hot path appends to, drained into Arrow record batches.

Chunk columns are ``array.array`` so a drain hands them to Arrow without a per-row Python
loop: swapping the buffers is O(1) on the event loop, converting happens off it.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from raybench.store.schema import (
    CHUNK_KIND_VALUES,
    CHUNKS_SCHEMA,
    REQUESTS_SCHEMA,
    STATUS_VALUES,
    ChunkKind,
    RequestStatus,
)

KIND_CODE = {kind: i for i, kind in enumerate(ChunkKind)}
K_TOKEN, K_EMPTY, K_USAGE, K_DONE = (KIND_CODE[k] for k in ChunkKind)
STATUS_CODE = {status: i for i, status in enumerate(RequestStatus)}

_KIND_DICTIONARY = pa.array(CHUNK_KIND_VALUES, pa.string())
_STATUS_DICTIONARY = pa.array(STATUS_VALUES, pa.string())


def pack_code(n_tokens: int, kind: int) -> int:
    """One int per event for the hot path: the token count and the kind, unpacked at drain."""
    return (n_tokens << 2) | kind


@dataclass(slots=True)
class ChunkColumns:
    request_id: array.array = field(default_factory=lambda: array.array("Q"))
    seq: array.array = field(default_factory=lambda: array.array("i"))
    t_ns: array.array = field(default_factory=lambda: array.array("q"))
    code: array.array = field(default_factory=lambda: array.array("i"))  # pack_code()

    def __len__(self) -> int:
        return len(self.t_ns)


@dataclass(slots=True)
class RequestColumns:
    request_id: list[int] = field(default_factory=list)
    session: list[int | None] = field(default_factory=list)
    turn: list[int | None] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    server_prompt_tokens: list[int | None] = field(default_factory=list)
    max_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int | None] = field(default_factory=list)
    cached_tokens: list[int | None] = field(default_factory=list)
    t_scheduled_ns: list[int] = field(default_factory=list)
    t_sent_ns: list[int] = field(default_factory=list)
    t_first_ns: list[int | None] = field(default_factory=list)
    t_done_ns: list[int] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    http_status: list[int | None] = field(default_factory=list)
    error: list[str | None] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    send_lateness_ns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.request_id)


def _dictionary(codes: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), dictionary)


def _shift(values: np.ndarray, offset_ns: int) -> np.ndarray:
    return values - offset_ns if offset_ns else values


def _shift_nullable(values: list[int | None], offset_ns: int) -> pa.Array:
    return pa.array([None if v is None else v - offset_ns for v in values], pa.int64())


def _optional(values: list[int | None], n: int, type_: pa.DataType) -> pa.Array:
    """A column that writers outside sessions may leave empty: all null then."""
    return pa.array(values, type_) if values else pa.nulls(n, type_)


def chunks_batch(cols: ChunkColumns, cell_id: str, offset_ns: int) -> pa.RecordBatch:
    """Arrow batch of ``cols``, times moved from the actor's clock to the run's time base."""
    n = len(cols)
    code = np.frombuffer(cols.code, np.int32)
    return pa.RecordBatch.from_arrays(
        [
            pa.repeat(pa.scalar(cell_id, pa.string()), n),
            pa.array(np.frombuffer(cols.request_id, np.uint64)),
            pa.array(np.frombuffer(cols.seq, np.int32)),
            pa.array(_shift(np.frombuffer(cols.t_ns, np.int64), offset_ns)),
            pa.array((code >> 2).astype(np.int16)),
            _dictionary((code & 3).astype(np.int8), _KIND_DICTIONARY),
        ],
        schema=CHUNKS_SCHEMA,
    )


def requests_batch(
    cols: RequestColumns, cell_id: str, actor: str, node: str, offset_ns: int
) -> pa.RecordBatch:
    n = len(cols)
    return pa.RecordBatch.from_arrays(
        [
            pa.repeat(pa.scalar(cell_id, pa.string()), n),
            pa.array(cols.request_id, pa.uint64()),
            pa.repeat(pa.scalar(actor, pa.string()), n),
            pa.repeat(pa.scalar(node, pa.string()), n),
            pa.array(cols.prompt_tokens, pa.int32()),
            pa.array(cols.server_prompt_tokens, pa.int32()),
            pa.array(cols.max_tokens, pa.int32()),
            pa.array(cols.output_tokens, pa.int32()),
            pa.array(cols.cached_tokens, pa.int32()),
            pa.array(_shift(np.asarray(cols.t_scheduled_ns, np.int64), offset_ns)),
            pa.array(_shift(np.asarray(cols.t_sent_ns, np.int64), offset_ns)),
            _shift_nullable(cols.t_first_ns, offset_ns),
            pa.array(_shift(np.asarray(cols.t_done_ns, np.int64), offset_ns)),
            _dictionary(np.asarray(cols.status, np.int8), _STATUS_DICTIONARY),
            pa.array(cols.http_status, pa.int16()),
            pa.array(cols.error, pa.string()),
            _optional(cols.attempts, n, pa.int8()),
            _optional(cols.send_lateness_ns, n, pa.int64()),
            _optional(cols.session, n, pa.int32()),
            _optional(cols.turn, n, pa.int16()),
        ],
        schema=REQUESTS_SCHEMA,
    )

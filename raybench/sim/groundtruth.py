"""The simulator's own record of what it sent, to check what a client measured.

One row per SSE event written (``chunks``) and one row per generation request (``requests``).
Appending must cost next to nothing on the hot path, so events are stored as *runs*: one
write of consecutive events of one request gets one row of flat ``array`` columns (request,
first seq, count, timestamp, source table, offset). Per-event n_tokens and kind come from the
response plan's shared ``EventTable``; runs are expanded with numpy only when exported.
"""

from __future__ import annotations

import enum
from array import array
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

class EventKind(enum.IntEnum):
    """What one SSE event carried (stored as int8 codes, exported as lower-case names)."""

    TOKEN = 0  # choices with non-empty text
    EMPTY = 1  # choices with empty text: the chat role chunk
    USAGE = 2  # choices == []: the trailing include_usage chunk
    DONE = 3  # the [DONE] sentinel
    MALFORMED = 4  # sim-only: the garbage event of the malformed fault


class SimStatus(enum.IntEnum):
    """How a request ended, seen from the simulator (the client's vocabulary where it applies)."""

    OK = 0  # the whole response was written
    HTTP_ERROR = 1  # answered 4xx/5xx (bad request, or the http_500 / http_429 faults)
    DISCONNECTED = 2  # the connection closed mid-response (client left, or the drop fault)
    BAD_RESPONSE = 3  # 200 but not valid OpenAI output (malformed / not_openai faults)
    STALLED = 4  # the stall fault: nothing more will be sent


KINDS: tuple[str, ...] = tuple(k.name.lower() for k in EventKind)
STATUSES: tuple[str, ...] = tuple(s.name.lower() for s in SimStatus)

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("request_key", pa.string(), nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("t_ns", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int16(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)

REQUESTS_SCHEMA = pa.schema(
    [
        pa.field("request_key", pa.string(), nullable=False),
        pa.field("t_arrival_ns", pa.int64(), nullable=False),  # first bytes of the request read
        pa.field("t_end_ns", pa.int64(), nullable=False),  # last write, close, or stall start
        pa.field("prompt_tokens", pa.int32(), nullable=False),
        pa.field("output_tokens", pa.int32(), nullable=False),  # tokens actually sent
        pa.field("max_tokens", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("http_status", pa.int16(), nullable=False),
        pa.field("fault", pa.string()),  # FaultKind value, null when none was injected
    ]
)


@dataclass(frozen=True, eq=False)
class EventTable:
    """Per-event output tokens (int16) and kind codes (int8) of one response, in order."""

    n_tokens: array
    kinds: array


class GroundTruthLog:
    """Column buffers for the chunk and request tables; ``reset()`` empties both."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._keys: list[str] = []
        self._sources: list[EventTable] = []
        self._source_index: dict[int, int] = {}
        self._run_req = array("q")
        self._run_seq0 = array("q")
        self._run_len = array("q")
        self._run_t = array("q")
        self._run_src = array("q")
        self._run_off = array("q")
        self._req_key = array("q")
        self._req_arrival = array("q")
        self._req_end = array("q")
        self._req_prompt = array("q")
        self._req_output = array("q")
        self._req_max = array("q")
        self._req_status = array("b")
        self._req_http = array("h")
        self._req_fault: list[str | None] = []

    # -- hot path ------------------------------------------------------------------------------
    def new_request(self, key: str) -> int:
        """Register a request key; returns the index the other calls take."""
        self._keys.append(key)
        return len(self._keys) - 1

    def source(self, table: EventTable) -> int:
        """Index of an event table, registering it once (a stream calls this once)."""
        index = self._source_index.get(id(table))
        if index is None:
            index = len(self._sources)
            self._sources.append(table)  # kept alive, so id() stays unique
            self._source_index[id(table)] = index
        return index

    def events(self, req: int, seq0: int, t_ns: int, source: int, offset: int, count: int) -> None:
        """Events ``offset .. offset+count`` of ``source`` went out in one write at ``t_ns``."""
        self._run_req.append(req)
        self._run_seq0.append(seq0)
        self._run_len.append(count)
        self._run_t.append(t_ns)
        self._run_src.append(source)
        self._run_off.append(offset)

    def request_done(
        self,
        req: int,
        *,
        t_arrival_ns: int,
        t_end_ns: int,
        prompt_tokens: int,
        output_tokens: int,
        max_tokens: int,
        status: SimStatus,
        http_status: int,
        fault: str | None = None,
    ) -> None:
        self._req_key.append(req)
        self._req_arrival.append(t_arrival_ns)
        self._req_end.append(t_end_ns)
        self._req_prompt.append(prompt_tokens)
        self._req_output.append(output_tokens)
        self._req_max.append(max_tokens)
        self._req_status.append(status)
        self._req_http.append(http_status)
        self._req_fault.append(fault)

    # -- export --------------------------------------------------------------------------------
    def chunks_table(self) -> pa.Table:
        lengths = np.frombuffer(self._run_len, dtype=np.int64)
        total = int(lengths.sum())
        starts = np.cumsum(lengths) - lengths
        within = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
        n_tokens = np.zeros(0, np.int16)
        kinds = np.zeros(0, np.int8)
        if total:
            bases = np.cumsum([0] + [len(s.kinds) for s in self._sources])
            all_tokens = np.concatenate([np.frombuffer(s.n_tokens, np.int16) for s in self._sources])
            all_kinds = np.concatenate([np.frombuffer(s.kinds, np.int8) for s in self._sources])
            src = np.frombuffer(self._run_src, dtype=np.int64)
            offset = bases[src] + np.frombuffer(self._run_off, dtype=np.int64)
            index = np.repeat(offset, lengths) + within
            n_tokens, kinds = all_tokens[index], all_kinds[index]
        seq = np.repeat(np.frombuffer(self._run_seq0, np.int64), lengths) + within
        return pa.table(
            {
                "request_key": _decode(np.repeat(np.frombuffer(self._run_req, np.int64), lengths), self._keys),
                "seq": pa.array(seq.astype(np.int32)),
                "t_ns": pa.array(np.repeat(np.frombuffer(self._run_t, np.int64), lengths)),
                "n_tokens": pa.array(n_tokens.astype(np.int16)),
                "kind": _decode(kinds.astype(np.int64), KINDS),
            },
            schema=CHUNKS_SCHEMA,
        )

    def requests_table(self) -> pa.Table:
        def col(buf: array, dtype) -> pa.Array:
            return pa.array(np.frombuffer(buf, np.int64).astype(dtype))

        return pa.table(
            {
                "request_key": _decode(np.frombuffer(self._req_key, np.int64), self._keys),
                "t_arrival_ns": col(self._req_arrival, np.int64),
                "t_end_ns": col(self._req_end, np.int64),
                "prompt_tokens": col(self._req_prompt, np.int32),
                "output_tokens": col(self._req_output, np.int32),
                "max_tokens": col(self._req_max, np.int32),
                "status": _decode(np.frombuffer(self._req_status, np.int8).astype(np.int64), STATUSES),
                "http_status": pa.array(np.frombuffer(self._req_http, np.int16)),
                "fault": pa.array(self._req_fault, pa.string()),
            },
            schema=REQUESTS_SCHEMA,
        )


def _decode(codes: np.ndarray, names: list[str] | tuple[str, ...]) -> pa.Array:
    """Codes into a plain string column, via a dictionary array (fast for many rows)."""
    dictionary = pa.array(list(names), pa.string())
    if len(codes) == 0:
        return pa.array([], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int64()), dictionary).dictionary_decode()


def to_ipc_stream(table: pa.Table) -> bytes:
    """An Arrow IPC stream (what GET /sim/ground_truth returns)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()

"""The Arrow schemas of raybench's raw records, shared by every writer and reader.

One row per request and one row per streamed SSE event ("chunk"), flat, so Polars can join
and group them. Times are nanoseconds on the run's cluster-wide time base (see
``raybench.loadgen.clock``); durations within one request never depend on that base.
"""

from __future__ import annotations

import enum

import pyarrow as pa

SCHEMA_VERSION = 1


class RequestStatus(str, enum.Enum):
    """How one request ended."""

    OK = "ok"  # the stream ended normally ([DONE] or a complete non-streamed body)
    HTTP_ERROR = "http_error"  # the server answered with a status other than 200
    TIMEOUT = "timeout"  # the per-request deadline passed before the stream ended
    DISCONNECTED = "disconnected"  # connection refused, reset, or the stream was cut mid-way
    BAD_RESPONSE = "bad_response"  # 200, but not an OpenAI-style body or stream (malformed SSE/JSON)
    CANCELLED = "cancelled"  # the run was stopped (Ctrl-C, cell deadline) before the request ended


class ChunkKind(str, enum.Enum):
    """What one SSE event carried; the compat modes differ on which of these count."""

    TOKEN = "token"  # non-empty choices with non-empty text (or content/reasoning)
    EMPTY = "empty"  # non-empty choices but empty text: a role-only chat chunk, a finish-only chunk
    USAGE = "usage"  # an empty choices list: the trailing include_usage chunk
    DONE = "done"  # the ``data: [DONE]`` sentinel


STATUS_VALUES = tuple(s.value for s in RequestStatus)
CHUNK_KIND_VALUES = tuple(k.value for k in ChunkKind)

_dict_str = pa.dictionary(pa.int8(), pa.string())

REQUESTS_SCHEMA = pa.schema(
    [
        pa.field("cell_id", pa.string(), nullable=False),
        pa.field("request_id", pa.uint64(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("node", pa.string(), nullable=False),
        # what the workload built (SGLang sums these); server_prompt_tokens is usage.prompt_tokens
        pa.field("prompt_tokens", pa.int32(), nullable=False),
        pa.field("server_prompt_tokens", pa.int32()),
        pa.field("max_tokens", pa.int32(), nullable=False),
        # usage.completion_tokens from the server; null when the server sent no usage
        pa.field("output_tokens", pa.int32()),
        pa.field("cached_tokens", pa.int32()),
        pa.field("t_scheduled_ns", pa.int64(), nullable=False),
        pa.field("t_sent_ns", pa.int64(), nullable=False),
        # first chunk carrying >= 1 output token (raybench's TTFT trigger); null if none came
        pa.field("t_first_ns", pa.int64()),
        pa.field("t_done_ns", pa.int64(), nullable=False),
        pa.field("status", _dict_str, nullable=False),
        pa.field("http_status", pa.int16()),
        pa.field("error", pa.string()),
        # 2 when the connection closed before any response byte and the request was sent again
        # on a fresh one; null where nothing was sent over HTTP (offline engine mode)
        pa.field("attempts", pa.int8()),
        # t_sent minus when the request was due: its scheduled time, or later when it had to
        # wait for a concurrency slot (that wait is queue time, not lateness); null where no
        # schedule applies (an in-process engine) and in tables written before it existed
        pa.field("send_lateness_ns", pa.int64()),
        # a multi-turn conversation's session and turn (0 = first); null outside one and in
        # tables written before they existed
        pa.field("session", pa.int32()),
        pa.field("turn", pa.int16()),
    ],
    metadata={"raybench.schema_version": str(SCHEMA_VERSION), "raybench.table": "requests"},
)

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("cell_id", pa.string(), nullable=False),
        pa.field("request_id", pa.uint64(), nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("t_ns", pa.int64(), nullable=False),
        # output tokens this event added (from continuous usage stats where the server sends
        # them, else 1 per token-bearing event)
        pa.field("n_tokens", pa.int16(), nullable=False),
        pa.field("kind", _dict_str, nullable=False),
    ],
    metadata={"raybench.schema_version": str(SCHEMA_VERSION), "raybench.table": "chunks"},
)


def requests_from_columns(columns: dict[str, list]) -> pa.Table:
    """A requests table from the columns a writer knows; nullable columns it leaves out are null.

    Writers outside the HTTP hot path (an in-process engine, a prediction, rows for a lost actor)
    know only some columns; a column added later must not break them.
    """
    n = len(columns["request_id"])
    missing = [f.name for f in REQUESTS_SCHEMA if f.name not in columns and not f.nullable]
    if missing:
        raise ValueError(f"requests table without required columns: {', '.join(missing)}")
    full = {f.name: columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in REQUESTS_SCHEMA}
    return pa.Table.from_pydict(full, schema=REQUESTS_SCHEMA)

"""Mooncake-format trace replay: each request at its own timestamp, its prompt built from hash ids.

A trace is JSONL, one request a line, in time order::

    {"timestamp": 0, "input_length": 1200, "output_length": 40, "hash_ids": [0, 1, 2]}
    {"timestamp": 27, "input_length": 700, "output_length": 12, "hash_ids": [0, 3]}

``timestamp`` is in milliseconds from the trace start; ``hash_ids`` name the prompt's blocks of
``block_size`` tokens (512 in Mooncake's traces). Block ``h`` is the same token ids in every
request that names it (drawn from ``default_rng([seed, 1, h])``), so requests that share hash
ids share that prefix byte for byte and a server's prefix cache sees the trace's real reuse.
A prompt is its blocks joined and cut to ``input_length``; one longer than its blocks is padded
with ids of its own. The workload owns its arrival times (:meth:`TraceWorkload.arrivals_s`).

The driver reads the file once, line by line; actors receive only the rows of the requests
they send (:meth:`TraceWorkload.shard`), never the file.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from raybench.errors import ConfigError
from raybench.workloads.base import (
    DEFAULT_TOKEN_ID_HIGH,
    DEFAULT_TOKEN_ID_LOW,
    MAX_TOKENS,
    RequestSpec,
    as_text,
    check_tokenizer,
    require_int,
)
from raybench.workloads.files import require_file

MOONCAKE_BLOCK_SIZE = 512
_BLOCK_STREAM = 1
_PAD_STREAM = 2
_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


@dataclass(frozen=True, kw_only=True, eq=False)
class TraceRows:
    """Columns of the selected trace records; ``hash_ids`` is ragged: row ``i`` holds
    ``hash_ids[hash_offsets[i]:hash_offsets[i + 1]]``."""

    request_ids: np.ndarray  # int64, ascending: which requests these rows are
    timestamps_ms: np.ndarray  # float64
    input_lengths: np.ndarray  # int32
    output_lengths: np.ndarray  # int32
    hash_offsets: np.ndarray  # int64, len(rows) + 1
    hash_ids: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.request_ids)

    def take(self, rows: np.ndarray) -> TraceRows:
        """The rows at these positions (their hash ids included), for one actor's share."""
        starts, ends = self.hash_offsets[rows], self.hash_offsets[rows + 1]
        lengths = ends - starts
        pieces = [self.hash_ids[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
        return TraceRows(
            request_ids=self.request_ids[rows],
            timestamps_ms=self.timestamps_ms[rows],
            input_lengths=self.input_lengths[rows],
            output_lengths=self.output_lengths[rows],
            hash_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            hash_ids=np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64),
        )


def _line_error(path: Path, line_no: int, what: str) -> ConfigError:
    return ConfigError(f"{path}:{line_no}: {what}; a Mooncake trace line looks like "
                       '{"timestamp": 27, "input_length": 700, "output_length": 12, "hash_ids": [0, 3]}')


def _int_field(path: Path, line_no: int, record: dict, name: str, minimum: int) -> int:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not minimum <= value <= MAX_TOKENS:
        raise _line_error(path, line_no, f"{name}={value!r} is not an integer from {minimum} to {MAX_TOKENS:,}")
    return int(value)


def read_mooncake(path: str | Path, limit: int | None = None) -> TraceRows:
    """The first ``limit`` records of a Mooncake JSONL trace (all when None), checked line by line.

    Errors name the file and the first bad line: not JSON, a missing field, a bad value, or a
    timestamp earlier than the line before (a replay needs them in order).
    """
    path = require_file(path, "trace")
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    offsets: list[int] = [0]
    hashes: list[int] = []
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if limit is not None and len(times) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise _line_error(path, line_no, f"not JSON ({err})") from None
            if not isinstance(record, dict) or any(k not in record for k in _FIELDS):
                missing = [k for k in _FIELDS if not isinstance(record, dict) or k not in record]
                raise _line_error(path, line_no, f"missing {', '.join(missing)}")
            stamp = record["timestamp"]
            if isinstance(stamp, bool) or not isinstance(stamp, numbers.Real) or not math.isfinite(stamp) or stamp < 0:
                raise _line_error(path, line_no, f"timestamp={stamp!r} is not a number of milliseconds >= 0")
            if times and stamp < times[-1]:
                raise ConfigError(f"{path}:{line_no}: timestamp {stamp} is earlier than the line before ({times[-1]:g}); "
                                  "a trace is replayed in time order: sort it by timestamp")
            ids = record["hash_ids"]
            if not isinstance(ids, list) or any(isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < 2**63
                                                for h in ids):
                raise _line_error(path, line_no, f"hash_ids={ids!r} is not a list of integers from 0 to 2**63 - 1")
            times.append(float(stamp))
            inputs.append(_int_field(path, line_no, record, "input_length", 1))
            outputs.append(_int_field(path, line_no, record, "output_length", 1))
            hashes.extend(ids)
            offsets.append(len(hashes))
    if not times:
        raise ConfigError(f"trace file {path} holds no records")
    return TraceRows(
        request_ids=np.arange(len(times), dtype=np.int64),
        timestamps_ms=np.asarray(times, np.float64),
        input_lengths=np.asarray(inputs, np.int32),
        output_lengths=np.asarray(outputs, np.int32),
        hash_offsets=np.asarray(offsets, np.int64),
        hash_ids=np.asarray(hashes, np.int64),
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class TraceWorkload:
    """A trace's requests at the trace's own times, ``time_scale`` times as far apart.

    ``time_scale`` 1 replays in real time, 2 at half the rate, 0.5 at twice the rate.
    ``output_len`` forces every output length (None: the trace's ``output_length``).
    Build it with :meth:`from_file`; the rows it holds are the requests it can build.
    """

    source: str
    rows: TraceRows = field(repr=False)
    num_selected: int
    time_scale: float = 1.0
    block_size: int = MOONCAKE_BLOCK_SIZE
    output_len: int | None = None
    seed: int = 0
    token_id_low: int = DEFAULT_TOKEN_ID_LOW
    token_id_high: int = DEFAULT_TOKEN_ID_HIGH
    tokenizer: str | None = None  # used only with text: the ids' text and its count
    tokenizer_revision: str | None = None
    text: bool = False

    def __post_init__(self) -> None:
        check_tokenizer("trace", self.tokenizer, self.tokenizer_revision, self.text)
        scale = self.time_scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
            raise ConfigError.invalid("time_scale", scale, "a finite number > 0 (1 = the trace's own pace, 2 = half as fast)")
        object.__setattr__(self, "time_scale", float(scale))
        require_int("trace.block_size", self.block_size, minimum=1)
        require_int("trace.seed", self.seed, minimum=0)
        if self.output_len is not None:
            require_int("trace.output_len", self.output_len, minimum=1)

    @classmethod
    def from_file(cls, path: str | Path, *, num_prompts: int | None = None, **params: Any) -> TraceWorkload:
        """The first ``num_prompts`` records of the trace at ``path`` (all when None)."""
        rows = read_mooncake(path, num_prompts)
        return cls(source=str(path), rows=rows, num_selected=len(rows), **params)

    @property
    def num_requests(self) -> int:
        return self.num_selected

    def arrivals_s(self) -> np.ndarray:
        """Seconds from the cell start of every request held, in request order; the first at 0."""
        stamps = self.rows.timestamps_ms
        return (stamps - stamps[0]) / 1000.0 * self.time_scale if len(stamps) else np.zeros(0)

    def shard(self, request_ids: Sequence[int]) -> TraceWorkload:
        """A workload that holds only these requests' rows: what one actor is sent."""
        return replace(self, rows=self.rows.take(self._positions(request_ids)))

    def build(self, request_ids: Sequence[int]) -> list[RequestSpec]:
        positions = self._positions(request_ids)
        rows, blocks = self.rows, {}
        specs = []
        for request_id, row in zip(request_ids, positions.tolist()):
            hash_ids = rows.hash_ids[rows.hash_offsets[row]:rows.hash_offsets[row + 1]].tolist()
            length = int(rows.input_lengths[row])
            parts = []
            for h in hash_ids[: math.ceil(length / self.block_size)]:
                if h not in blocks:
                    blocks[h] = self._ids((self.seed, _BLOCK_STREAM, h), self.block_size)
                parts.append(blocks[h])
            have = len(parts) * self.block_size
            if have < length:
                parts.append(self._ids((self.seed, _PAD_STREAM, int(request_id)), length - have))
            ids, text = np.concatenate(parts)[:length], None
            if self.text:
                ids, text = as_text(ids, self.tokenizer, self.tokenizer_revision)
            max_tokens = self.output_len or int(rows.output_lengths[row])
            specs.append(RequestSpec(request_id=int(request_id), prompt_token_ids=ids, prompt_tokens=int(ids.size),
                                     max_tokens=max_tokens, group=int(hash_ids[0]) if hash_ids else None,
                                     prompt_text=text))
        return specs

    def segments(self, request_id: int) -> tuple[tuple[int, int], ...]:
        """The request's prompt as ((key, tokens), ...) runs, one a block, keyed by what draws the
        block's ids and every block before it: two prompts share a key exactly where they share
        that prefix id for id (as a server's prefix cache sees it). The simulator's engine model
        caches by these keys (``raybench predict``)."""
        row = int(self._positions([request_id])[0])
        rows = self.rows
        hash_ids = rows.hash_ids[rows.hash_offsets[row]:rows.hash_offsets[row + 1]].tolist()
        length = int(rows.input_lengths[row])
        # chained: a block's KV depends on everything before it; a running hash keeps keys small
        key = hash(("trace", self.seed, self.token_id_low, self.token_id_high, self.block_size))
        out, have = [], 0
        for h in hash_ids[: math.ceil(length / self.block_size)]:
            key = hash((key, h))
            tokens = min(self.block_size, length - have)
            out.append((key, tokens))
            have += tokens
        if have < length:
            out.append((hash((key, "pad", int(request_id))), length - have))
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        rows = self.rows
        span_s = float(self.arrivals_s()[-1]) if len(rows) else 0.0
        return {
            "name": "trace", "format": "mooncake", "source": self.source, "num_requests": self.num_requests,
            "time_scale": self.time_scale, "block_size": self.block_size, "output_len": self.output_len,
            "seed": self.seed, "replay_span_s": span_s, "sent_as": "text" if self.text else "token ids",
            "distinct_blocks": int(np.unique(rows.hash_ids).size), "total_blocks": int(rows.hash_ids.size),
        }

    def _positions(self, request_ids: Sequence[int]) -> np.ndarray:
        wanted = np.asarray(request_ids, dtype=np.int64)
        positions = np.searchsorted(self.rows.request_ids, wanted)
        held = positions < len(self.rows)
        held[held] = self.rows.request_ids[positions[held]] == wanted[held]
        if not held.all():
            missing = int(wanted[~held][0])
            raise ConfigError.invalid("request_id", missing, f"one of the {len(self.rows)} trace requests this workload holds")
        return positions

    def _ids(self, key: tuple[int, int, int], length: int) -> np.ndarray:
        rng = np.random.default_rng(list(key))
        return rng.integers(self.token_id_low, self.token_id_high, size=length, dtype=np.int32)

"""Mooncake-format trace replay: each request at its own timestamp, its prompt built from hash ids.

A trace is JSONL, one request a line, in time order::

    {"timestamp": 0, "input_length": 1200, "output_length": 40, "hash_ids": [0, 1, 2]}
    {"timestamp": 27, "input_length": 700, "output_length": 12, "hash_ids": [0, 3]}

``timestamp`` is in milliseconds from the trace start; ``hash_ids`` name the prompt's blocks of
``block_size`` tokens (512 in Mooncake's traces). Block ``h`` is drawn from
``default_rng([seed, 1, h])``, so requests that share hash ids share that prefix byte for byte
and a server's prefix cache sees the trace's real reuse. A prompt is its blocks joined and cut
to ``input_length``; one longer than its blocks is padded with ids of its own. The workload
owns its arrival times (:meth:`TraceWorkload.arrivals_s`).

Without a tokenizer (or with the simulator's word count) the ids come from
``[token_id_low, token_id_high)`` and block ``h`` is the same ids in every request that names
it. With a model's tokenizer they come from its vocabulary, and each block is fitted behind the
blocks before it (:func:`raybench.workloads.prompts.fit_chained`), as random prompts are: the
text encodes back to exactly ``input_length`` ids, and requests that share their leading hash
ids (in Mooncake's traces a hash id implies the ones before it) share those blocks' ids and text.

The driver reads the file once, line by line; actors receive only the rows of the requests
they send (:meth:`TraceWorkload.shard`), never the file.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Hashable, Sequence
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
    check_tokenizer,
    require_int,
    require_vocab,
)
from raybench.workloads.files import require_file
from raybench.workloads.prompts import ChainLink, fit_chained
from raybench.workloads.tokenizer import Tokenizer, WordTokenizer, load_tokenizer

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
    # per row: how many of its leading blocks another selected request also uses (the same hash
    # ids before them, cut to the same length); None: not counted, every block treated as shared
    shared_blocks: np.ndarray | None = None  # int32

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
            shared_blocks=None if self.shared_blocks is None else self.shared_blocks[rows],
        )

    def with_shared_blocks(self, block_size: int) -> TraceRows:
        """These rows with ``shared_blocks`` counted among them, for blocks of ``block_size`` tokens."""
        chains = [_block_keys(self, row, block_size) for row in range(len(self))]
        uses = Counter(key for keys in chains for key in keys)
        shared = [next((k for k, key in enumerate(keys) if uses[key] < 2), len(keys)) for keys in chains]
        return replace(self, shared_blocks=np.asarray(shared, np.int32))


def _block_keys(rows: TraceRows, row: int, block_size: int) -> list[int]:
    """One key per block a row's prompt uses: its hash id, the blocks before it and its length."""
    length = int(rows.input_lengths[row])
    hash_ids = rows.hash_ids[rows.hash_offsets[row]:rows.hash_offsets[row + 1]].tolist()
    keys, key = [], 0
    for k, h in enumerate(hash_ids[: math.ceil(length / block_size)]):
        key = hash((key, h, min(block_size, length - k * block_size)))
        keys.append(key)
    return keys


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
    tokenizer: str | None = None  # a name or path for load_tokenizer; None: the id range
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
        low, high = require_vocab("trace", self.token_id_low, self.token_id_high)
        object.__setattr__(self, "token_id_low", low)
        object.__setattr__(self, "token_id_high", high)

    @classmethod
    def from_file(cls, path: str | Path, *, num_prompts: int | None = None, **params: Any) -> TraceWorkload:
        """The first ``num_prompts`` records of the trace at ``path`` (all when None)."""
        rows = read_mooncake(path, num_prompts)
        workload = cls(source=str(path), rows=rows, num_selected=len(rows), **params)
        # counted over every selected request, before any actor gets its share
        return replace(workload, rows=rows.with_shared_blocks(workload.block_size))

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
        rows = self.rows
        plans = [(int(request_id), *self._blocks(row)) for request_id, row in zip(request_ids, positions.tolist())]
        tokenizer = None if self.tokenizer is None else load_tokenizer(self.tokenizer, revision=self.tokenizer_revision)
        if tokenizer is not None and not isinstance(tokenizer, WordTokenizer):
            prompts = self._fitted(tokenizer, plans, positions)
        else:
            prompts = self._drawn(tokenizer, plans)
        specs = []
        for (request_id, hash_ids, _), row, (ids, text) in zip(plans, positions.tolist(), prompts):
            max_tokens = self.output_len or int(rows.output_lengths[row])
            specs.append(RequestSpec(request_id=request_id, prompt_token_ids=ids, prompt_tokens=int(ids.size),
                                     max_tokens=max_tokens, group=int(hash_ids[0]) if hash_ids else None,
                                     prompt_text=text if self.text else None))
        return specs

    def _blocks(self, row: int) -> tuple[list[int], int]:
        """The hash ids a row's prompt uses (those its input_length reaches) and that length."""
        rows = self.rows
        length = int(rows.input_lengths[row])
        hash_ids = rows.hash_ids[rows.hash_offsets[row]:rows.hash_offsets[row + 1]].tolist()
        return hash_ids[: math.ceil(length / self.block_size)], length

    def _drawn(self, tokenizer: Tokenizer | None, plans: list[tuple[int, list[int], int]]) -> list[tuple[np.ndarray, str | None]]:
        """Ids from the id range, a block's the same wherever it appears; text in the word tokenizer's form."""
        blocks: dict[int, np.ndarray] = {}
        out = []
        for request_id, hash_ids, length in plans:
            parts = []
            for h in hash_ids:
                if h not in blocks:
                    blocks[h] = self._ids((self.seed, _BLOCK_STREAM, h), self.block_size)
                parts.append(blocks[h])
            have = len(parts) * self.block_size
            if have < length:
                parts.append(self._ids((self.seed, _PAD_STREAM, request_id), length - have))
            ids = np.concatenate(parts)[:length]
            # the word form is only built when it is sent; the word tokenizer reads it back id for id
            out.append((ids, tokenizer.decode(ids.tolist()) if self.text and tokenizer is not None else None))
        return out

    def _fitted(self, tokenizer: Tokenizer, plans: list[tuple[int, list[int], int]],
                positions: np.ndarray) -> list[tuple[np.ndarray, str]]:
        """Prompts from the tokenizer's vocabulary, fitted as random prompts are (``encode(text) ==
        ids``, exactly input_length of them). Each block another request also uses is fitted behind
        the blocks before it (:func:`fit_chained`), so requests that share leading hash ids share
        those blocks' ids and text exactly; the rest of a prompt (blocks no other request uses,
        padding) is one piece of the request's own, fitted at once: fitting block by block
        re-encodes the whole prefix for every block, which grows with the square of the length."""
        shared = self.rows.shared_blocks
        links: dict[Hashable, ChainLink] = {}
        ends = []
        size = self.block_size
        for (request_id, hash_ids, length), row in zip(plans, positions.tolist()):
            depth = len(hash_ids) if shared is None else int(shared[row])
            parent: Hashable | None = None
            for k, h in enumerate(hash_ids[:depth]):
                # keyed by everything that draws it: the hash ids up to it and its (possibly cut) length
                key = (tuple(hash_ids[: k + 1]), min(size, length - k * size))
                links[key] = ChainLink(parent=parent, seed=(self.seed, _BLOCK_STREAM, h), length=key[1])
                parent = key
            have = min(depth * size, length)
            if have < length:
                key = ("own", request_id)
                links[key] = ChainLink(parent=parent, seed=(self.seed, _PAD_STREAM, request_id), length=length - have)
                parent = key
            ends.append(parent)
        fitted = fit_chained(tokenizer, links)
        return [(fitted[end].ids, fitted[end].text) for end in ends]

    def segments(self, request_id: int) -> tuple[tuple[int, int], ...]:
        """The request's prompt as ((key, tokens), ...) runs, one a block, keyed by what draws the
        block's ids and every block before it: two prompts share a key exactly where they share
        that prefix id for id (as a server's prefix cache sees it). The simulator's engine model
        caches by these keys (``raybench predict``)."""
        hash_ids, length = self._blocks(int(self._positions([request_id])[0]))
        # chained: a block's KV depends on everything before it; a running hash keeps keys small
        key = hash(("trace", self.seed, self.token_id_low, self.token_id_high, self.block_size))
        out, have = [], 0
        for h in hash_ids:
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
            "tokenizer": self.tokenizer, "token_id_low": self.token_id_low, "token_id_high": self.token_id_high,
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

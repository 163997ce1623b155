"""Per-request metrics and pooled ITL lists, from the raw ``requests`` and ``chunks`` tables.

Everything is vectorised in Polars (one ``group_by`` over the chunks, one sort for the gaps)
because a cell can hold 10^7 chunk rows; no Python loop touches a chunk. Times in the tables
are ns; every metric here is ms (``*_ms``), the unit both reference clients report.

Which chunk starts TTFT, which ends E2E, which gaps form the ITL list and where the token count
comes from when the server sent no usage are the compat mode's choices (``compat.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from raybench.analysis.compat import (
    ChunkSelector,
    CompatMode,
    CompatRules,
    PromptTokenSource,
    TokenFallback,
    compat_rules,
)
from raybench.errors import ConfigError
from raybench.store.schema import RequestStatus

KEY = ["cell_id", "request_id"]
_NS_PER_MS = 1e6

_REQUEST_COLUMNS = {
    "cell_id": pl.String,
    "request_id": pl.UInt64,
    "prompt_tokens": pl.Int64,
    "max_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "t_scheduled_ns": pl.Int64,
    "t_sent_ns": pl.Int64,
    "t_done_ns": pl.Int64,
    "status": pl.String,
}
# Columns of the schema that a hand-made or older table may lack; absent ones read as null.
_OPTIONAL_REQUEST_COLUMNS = {
    "server_prompt_tokens": pl.Int64,
    "http_status": pl.Int64,
    "error": pl.String,
    "attempts": pl.Int64,  # null in cells recorded before the column (and in engine mode)
}
_CHUNK_COLUMNS = {
    "cell_id": pl.String,
    "request_id": pl.UInt64,
    "seq": pl.Int64,
    "t_ns": pl.Int64,
    "n_tokens": pl.Int64,
    "kind": pl.String,
}


def _require(frame: pl.DataFrame, table: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError.invalid(
            f"{table} columns", sorted(frame.columns), f"a {table} table with {missing} as well"
        )


def normalise_requests(requests: pl.DataFrame) -> pl.DataFrame:
    """The columns the analysis reads, with dictionary strings decoded and counts widened.

    Counts become Int64 so sums over 10^6 requests cannot overflow the schema's int32.
    """
    _require(requests, "requests", list(_REQUEST_COLUMNS))
    exprs = [pl.col(c).cast(t) for c, t in _REQUEST_COLUMNS.items()]
    for c, t in _OPTIONAL_REQUEST_COLUMNS.items():
        exprs.append(pl.col(c).cast(t) if c in requests.columns else pl.lit(None, dtype=t).alias(c))
    return requests.select(exprs)


def normalise_chunks(chunks: pl.DataFrame) -> pl.DataFrame:
    """The chunk columns the analysis reads, ``kind`` decoded to plain strings."""
    _require(chunks, "chunks", list(_CHUNK_COLUMNS))
    return chunks.select(pl.col(c).cast(t) for c, t in _CHUNK_COLUMNS.items())


@dataclass(frozen=True, kw_only=True)
class CellTables:
    """A cell's tables normalised once, so a summary does not re-cast 10^7 chunk rows per metric.

    ``ok_chunks`` holds the chunks of successful requests only: failures never feed a latency
    or token list.
    """

    requests: pl.DataFrame
    chunks: pl.DataFrame
    ok_chunks: pl.DataFrame

    @classmethod
    def from_raw(cls, requests: pl.DataFrame, chunks: pl.DataFrame) -> CellTables:
        req = normalise_requests(requests)
        ch = normalise_chunks(chunks)
        ok = req.filter(pl.col("status") == RequestStatus.OK.value).select(KEY)
        return cls(requests=req, chunks=ch, ok_chunks=ch.join(ok, on=KEY, how="semi"))


def request_metrics(
    requests: pl.DataFrame, chunks: pl.DataFrame, compat: CompatMode | str = CompatMode.RAYBENCH
) -> pl.DataFrame:
    """One row per request with its latencies (ms) and the output-token count it is credited.

    Columns: the request's identity, status, ``ok``, times (ns), prompt/server prompt tokens,
    ``prompt_tokens_used`` (the count the mode's input totals sum: ``prompt_tokens``, or in vllm
    mode the server's count where it sent one),
    ``output_tokens_used`` and ``output_tokens_fallback`` (True where the server sent no usage
    and the mode's fallback supplied the count), ``chunk_tokens`` (Σ n_tokens), ``ttft_ms``,
    ``e2e_ms``, ``tpot_ms`` (null unless output_tokens_used > 1), ``short_output`` (a successful
    request credited fewer tokens than its max_tokens), ``queue_time_ms``
    (t_sent − t_scheduled), ``http_status``, ``error``. TTFT/E2E are null where no chunk matches
    the mode's trigger; failed requests keep their row (``ok`` False) so callers can count them.
    """
    return per_request_frame(CellTables.from_raw(requests, chunks), compat_rules(compat))


def per_request_frame(tables: CellTables, rules: CompatRules) -> pl.DataFrame:
    """:func:`request_metrics` on tables already normalised."""
    req, ch = tables.requests, tables.chunks
    # min/max of t_ns equal first/last by seq: a request's chunk times come from one actor's
    # monotonic clock in read order.
    events = ch.group_by(KEY).agg(
        pl.col("t_ns").filter(rules.ttft_trigger.predicate()).min().alias("t_ttft_ns"),
        pl.col("t_ns").filter(rules.e2e_end.predicate()).max().alias("t_end_ns"),
        pl.col("n_tokens").sum().alias("chunk_tokens"),
    )
    usage = pl.col("output_tokens")
    missing = usage.is_null() | (usage == 0) if rules.fallback_on_zero else usage.is_null()
    if rules.token_fallback is TokenFallback.SUM_N_TOKENS:
        fallback = pl.col("chunk_tokens")
    else:
        fallback = pl.col("max_tokens")
    ttft = (pl.col("t_ttft_ns") - pl.col("t_sent_ns")) / _NS_PER_MS
    e2e = (pl.col("t_end_ns") - pl.col("t_sent_ns")) / _NS_PER_MS
    used = pl.col("output_tokens_used")
    prompt_used = pl.col("prompt_tokens")
    if rules.prompt_tokens is PromptTokenSource.SERVER_USAGE:
        prompt_used = pl.coalesce("server_prompt_tokens", "prompt_tokens")
    return (
        req.join(events, on=KEY, how="left")
        .with_columns(pl.col("chunk_tokens").fill_null(0))
        .with_columns(
            (pl.col("status") == RequestStatus.OK.value).alias("ok"),
            missing.alias("output_tokens_fallback"),
            prompt_used.alias("prompt_tokens_used"),
            pl.when(missing).then(fallback).otherwise(usage).alias("output_tokens_used"),
            ttft.alias("ttft_ms"),
            e2e.alias("e2e_ms"),
            ((pl.col("t_sent_ns") - pl.col("t_scheduled_ns")) / _NS_PER_MS).alias("queue_time_ms"),
        )
        .with_columns(
            pl.when(used > 1)
            .then((pl.col("e2e_ms") - pl.col("ttft_ms")) / (used - 1))
            .otherwise(None)
            .alias("tpot_ms"),
            # fewer tokens than asked for: a flaw only where the client forced the length
            (pl.col("ok") & (used < pl.col("max_tokens"))).alias("short_output"),
        )
        .select(
            *KEY, "status", "ok", "t_scheduled_ns", "t_sent_ns", "t_done_ns", "prompt_tokens",
            "server_prompt_tokens", "prompt_tokens_used", "max_tokens", "output_tokens", "output_tokens_used",
            "output_tokens_fallback", "short_output", "chunk_tokens", "ttft_ms", "e2e_ms", "tpot_ms",
            "queue_time_ms", "http_status", "error",
        )
    )


@dataclass(frozen=True, kw_only=True)
class ItlLists:
    """Every inter-token gap of every successful request, pooled, in ms.

    ``per_chunk_ms``: one gap per selected chunk after a request's first (the mode's ITL).
    ``per_token_ms``: raybench's per-token ITL in every mode: each gap between token-bearing
    chunks divided evenly over the n_tokens of the later chunk (n entries of gap/n), so a chunk
    of 3 speculative tokens gives three ITLs; tokens of the first chunk get none. It is kept
    as ``token_gap_ms`` (gap/n per chunk) and ``token_gap_tokens`` (n): statistics take it from
    those (``stats.describe_repeated``), as the list itself holds one float per output token.
    """

    per_chunk_ms: np.ndarray
    token_gap_ms: np.ndarray
    token_gap_tokens: np.ndarray

    @property
    def per_token_ms(self) -> np.ndarray:
        return np.repeat(self.token_gap_ms, self.token_gap_tokens)


def _gaps(chunks: pl.DataFrame) -> pl.DataFrame:
    """Gap (ns) from each chunk to the previous one of the same request; first chunks dropped."""
    # One cell (what a summary holds) needs no string compares: sort and split on ints only.
    key = KEY if chunks["cell_id"].n_unique() > 1 else ["request_id"]
    same_request = pl.all_horizontal(pl.col(c) == pl.col(c).shift(1) for c in key)
    return (
        chunks.sort([*key, "seq"])
        .with_columns((pl.col("t_ns") - pl.col("t_ns").shift(1)).alias("gap_ns"))
        .filter(same_request)
    )


def itl_lists(
    requests: pl.DataFrame, chunks: pl.DataFrame, compat: CompatMode | str = CompatMode.RAYBENCH
) -> ItlLists:
    """The pooled ITL lists of successful requests under ``compat`` (see :class:`ItlLists`)."""
    return pooled_itl(CellTables.from_raw(requests, chunks), compat_rules(compat))


def pooled_itl(tables: CellTables, rules: CompatRules) -> ItlLists:
    """:func:`itl_lists` on tables already normalised."""
    ch = tables.ok_chunks
    per_chunk = _gaps(ch.filter(rules.itl_chunks.predicate()))
    tokens = _gaps(ch.filter(ChunkSelector.TOKEN_BEARING.predicate()))
    n = tokens["n_tokens"].to_numpy()
    return ItlLists(
        per_chunk_ms=per_chunk["gap_ns"].to_numpy().astype(np.float64) / _NS_PER_MS,
        token_gap_ms=(tokens["gap_ns"].to_numpy() / _NS_PER_MS / n).astype(np.float64),
        token_gap_tokens=n.astype(np.int64),
    )

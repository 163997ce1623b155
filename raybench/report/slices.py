"""Which cells each seed chart shows, chosen from whatever matrix a frame holds.

The seed fixed its slices by hand (output 800 for the concurrency sweep, concurrency 128 for the
output-length sweep, batch 256 offline, concurrency 128 for prefix caching). A raybench run may
have run any matrix, so each slice is chosen by a rule that picks exactly the seed's values on
the seed's matrix, and a caller can pin the value instead.
"""

from __future__ import annotations

import polars as pl

from raybench.errors import RaybenchError
from raybench.report.frame import CellMode


class NothingToDraw(RaybenchError):
    """A chart's cells are not in the frame (no offline cells, no prefix-cached pairs...)."""


def online_base(frame: pl.DataFrame) -> pl.DataFrame:
    """Online cells at a fixed concurrency without a shared prefix: the seed's plain online runs."""
    return frame.filter(
        (pl.col("mode") == CellMode.ONLINE.value)
        & ~pl.col("prefix_cached").fill_null(False)
        & pl.col("concurrency").is_not_null()
    )


def offline_base(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter((pl.col("mode") == CellMode.OFFLINE.value) & pl.col("batch_size").is_not_null())


def _pick(cells: pl.DataFrame, keys: list[str], count: str, tie: list[tuple[str, bool]]) -> dict:
    """The ``keys`` group with the most distinct ``count`` values; ``tie`` orders equal groups."""
    groups = cells.group_by(keys).agg(pl.col(count).n_unique().alias("_n"))
    by = ["_n", *(name for name, _ in tie)]
    descending = [True, *(desc for _, desc in tie)]
    return groups.sort(by, descending=descending, nulls_last=True).row(0, named=True)


def _where(cells: pl.DataFrame, values: dict) -> pl.DataFrame:
    for name, value in values.items():
        if name.startswith("_"):
            continue
        cells = cells.filter(pl.col(name).eq_missing(value))
    return cells


def concurrency_sweep(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Online cells of the (input, output) length with the most cells (seed: 3200 / 800)."""
    return _most_common_lengths(online_base(frame), "no online cells at a fixed concurrency without prefix caching")


def batch_sweep(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Offline cells of the (input, output) length with the most cells (seed: 3200 / 800)."""
    return _most_common_lengths(offline_base(frame), "no offline cells")


def _most_common_lengths(cells: pl.DataFrame, none_left: str) -> tuple[pl.DataFrame, dict]:
    if cells.is_empty():
        raise NothingToDraw(none_left)
    pick = _pick(
        cells.with_row_index("_cell"), ["input_len", "output_len"], "_cell",
        [("output_len", False), ("input_len", False)],
    )
    return _where(cells, pick), pick


def output_sweep_online(frame: pl.DataFrame, concurrency: int | None = None) -> tuple[pl.DataFrame, dict]:
    """Online cells at one concurrency over output lengths (seed: concurrency 128).

    Default: the concurrency with the most output lengths, the highest on a tie.
    """
    cells = online_base(frame)
    if concurrency is not None:
        cells = cells.filter(pl.col("concurrency") == concurrency)
    if cells.is_empty():
        at = "" if concurrency is None else f" at concurrency {concurrency}"
        raise NothingToDraw(f"no online cells without prefix caching{at}")
    pick = _pick(cells, ["input_len", "concurrency"], "output_len", [("concurrency", True), ("input_len", False)])
    if pick["_n"] < 2:
        raise NothingToDraw("online cells at only one output length; the chart needs two or more")
    return _where(cells, pick), pick


def output_sweep_offline(frame: pl.DataFrame, batch_size: int | None = None) -> tuple[pl.DataFrame, dict]:
    """Offline cells at one batch size over output lengths (seed: batch 256).

    Default: the batch size with the most output lengths, the smallest on a tie.
    """
    cells = offline_base(frame)
    if batch_size is not None:
        cells = cells.filter(pl.col("batch_size") == batch_size)
    if cells.is_empty():
        at = "" if batch_size is None else f" at batch size {batch_size}"
        raise NothingToDraw(f"no offline cells{at}")
    pick = _pick(cells, ["input_len", "batch_size"], "output_len", [("batch_size", False), ("input_len", False)])
    if pick["_n"] < 2:
        raise NothingToDraw("offline cells at only one output length; the chart needs two or more")
    return _where(cells, pick), pick


PREFIX_KEYS = ["series", "concurrency", "input_len", "output_len"]


def prefix_pairs(frame: pl.DataFrame, concurrency: int | None = None) -> tuple[pl.DataFrame, dict]:
    """Online cells with and without prefix caching, same series and lengths, at one concurrency.

    Default: the concurrency and lengths with the most such pairs, the highest concurrency on a
    tie (seed: 128, 3200 / 800).
    Returns both halves of every pair (``prefix_cached`` tells them apart).
    """
    online = _adopt_cached_launches(
        frame.filter((pl.col("mode") == CellMode.ONLINE.value) & pl.col("concurrency").is_not_null()))
    cached = online.filter(pl.col("prefix_cached").fill_null(False))
    plain = online.filter(~pl.col("prefix_cached").fill_null(False))
    pairs = cached.select(PREFIX_KEYS).join(plain.select(PREFIX_KEYS), on=PREFIX_KEYS, how="semi", nulls_equal=True)
    if concurrency is not None:
        pairs = pairs.filter(pl.col("concurrency") == concurrency)
    if pairs.is_empty():
        raise NothingToDraw("no online cells run both with and without prefix caching at the same lengths")
    pick = _pick(
        pairs.with_row_index("_cell"), ["concurrency", "input_len", "output_len"], "_cell",
        [("concurrency", True), ("output_len", False), ("input_len", False)],
    )
    chosen = _where(pairs, pick).unique(maintain_order=True)
    cells = online.join(chosen, on=PREFIX_KEYS, how="semi", nulls_equal=True)
    return cells, pick


_TWIN_KEYS = ["run", "engine", "hardware", "concurrency", "input_len", "output_len"]


def _adopt_cached_launches(online: pl.DataFrame) -> pl.DataFrame:
    """A prefix-cached cell whose series has no uncached twin joins the one series of its run, engine
    and hardware that has one: a server launched with prefix caching as a backend of its own (the
    seed's vLLM) is that engine with the cache on. Two or more candidate series: left as it is."""
    if online.is_empty() or "engine" not in online.columns or online["engine"].drop_nulls().is_empty():
        return online
    cached = pl.col("prefix_cached").fill_null(False)
    plain = online.filter(~cached)
    orphans = online.filter(cached).join(plain.select(PREFIX_KEYS).unique(), on=PREFIX_KEYS, how="anti",
                                          nulls_equal=True)
    twins = (orphans.select("cell_id", *_TWIN_KEYS)
             .join(plain.select(*_TWIN_KEYS, pl.col("series").alias("twin")).unique(), on=_TWIN_KEYS)
             .group_by("cell_id").agg(pl.col("twin").unique()))
    single = twins.filter(pl.col("twin").list.len() == 1)
    adopted = dict(single.select("cell_id", pl.col("twin").list.first()).iter_rows())
    if not adopted:
        return online
    return online.with_columns(pl.col("cell_id").replace_strict(adopted, default=pl.col("series")).alias("series"))

"""Writing and reading one cell's raw tables.

Rows are durable as they arrive: the driver hands each poll round's batches to ``flush()``,
which writes them as one Parquet part per table under ``cells/<id>/parts/`` (each part written
to a temporary name and renamed, so a part on disk is always whole). A SIGKILL of the driver
mid-cell loses nothing already received. ``close()`` merges the parts into
``requests.parquet`` and ``chunks.parquet`` and removes them; a cell that did not finish keeps
its parts, and ``raybench plan --run-dir`` and ``--resume`` read them. A write that fails (disk
full) raises one ``StorageError`` naming the cell's file; batches after it are dropped, so that
first error is the one reported, and no temporary file is left behind.

A resume reruns an unfinished cell whole: the parts of the earlier attempt move to
``attempts/<n>/`` (never mixed with the new rows: latencies and throughput only mean something
when every request of a cell ran under the same load, in one session).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from raybench.errors import StorageError
from raybench.store.rundir import replace_durably, storage_errors, tmp_path
from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA

REQUESTS_FILE = "requests.parquet"
CHUNKS_FILE = "chunks.parquet"
SUMMARY_FILE = "summary.json"
PARTS_DIR = "parts"
ATTEMPTS_DIR = "attempts"
_TABLES = (("requests", REQUESTS_FILE, REQUESTS_SCHEMA), ("chunks", CHUNKS_FILE, CHUNKS_SCHEMA))


class CellWriter:
    """Receives record batches (a ``BatchSink``) and writes them to the cell's directory."""

    def __init__(self, cell_dir: Path) -> None:
        self.cell_dir = cell_dir
        self.parts_dir = cell_dir / PARTS_DIR
        with storage_errors(self.parts_dir):
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, list[pa.RecordBatch]] = {"requests": [], "chunks": []}
        self._seq = 0
        # rows on disk (in parts): what a failed write did not keep is not counted
        self.num_requests = 0
        self.num_chunks = 0
        self.request_ids: list[int] = []
        self.failed: StorageError | None = None

    def write_requests(self, batch: pa.RecordBatch) -> None:
        if self.failed is None:
            self._pending["requests"].append(batch)

    def write_chunks(self, batch: pa.RecordBatch) -> None:
        if self.failed is None:
            self._pending["chunks"].append(batch)

    def flush(self) -> None:
        """Write what arrived since the last flush as one part per table (chunks first).

        Chunks go first so that a request row on disk always has its chunks on disk too.
        """
        if self.failed is not None or not any(self._pending.values()):
            return
        self._seq += 1
        for name, final, schema in reversed(_TABLES):
            batches, self._pending[name] = self._pending[name], []
            if not batches:
                continue
            path = self.parts_dir / f"{name}-{self._seq:06d}.parquet"
            try:
                with storage_errors(self.cell_dir / final):
                    _write_part(path, batches, schema)
            except StorageError as err:
                self.failed = err
                self._pending = {"requests": [], "chunks": []}
                with contextlib.suppress(OSError):
                    tmp_path(path).unlink(missing_ok=True)
                raise
            rows = sum(b.num_rows for b in batches)
            if name == "requests":
                self.num_requests += rows
                self.request_ids.extend(i for b in batches for i in b.column("request_id").to_pylist())
            else:
                self.num_chunks += rows

    def close(self) -> None:
        """Merge the parts into the cell's two files (part by part: memory stays bounded)."""
        self.flush()
        for name, final, schema in _TABLES:
            tmp = tmp_path(self.cell_dir / final)
            with storage_errors(self.cell_dir / final), pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for part in sorted(self.parts_dir.glob(f"{name}-*.parquet")):
                    writer.write_table(pq.read_table(part, schema=schema))
            with storage_errors(self.cell_dir / final):
                replace_durably(tmp, self.cell_dir / final)
        shutil.rmtree(self.parts_dir)  # only now: until the merged files are on disk, the parts are the rows

    def abort(self) -> None:
        """Keep what arrived as parts; no file that looks like a finished cell, no temporary file."""
        with contextlib.suppress(StorageError):  # a second error would hide the first
            self.flush()
        for _, final, _ in _TABLES:
            with contextlib.suppress(OSError):
                tmp_path(self.cell_dir / final).unlink(missing_ok=True)


def _write_part(path: Path, batches: list[pa.RecordBatch], schema: pa.Schema) -> None:
    """One part, written whole under a temporary name and renamed (fsynced: a part on disk after a
    power loss is whole too, which is what resume and ``plan --run-dir`` read)."""
    tmp = tmp_path(path)
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
    replace_durably(tmp, path)


def read_parts(cell_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The (requests, chunks) rows an unfinished cell kept in its parts; None when it has none."""
    parts = cell_dir / PARTS_DIR
    if not parts.is_dir():
        return None
    tables = []
    for name, _, schema in _TABLES:
        files = sorted(parts.glob(f"{name}-*.parquet"))
        table = pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()
        tables.append(pl.from_arrow(table))
    return tables[0], tables[1]


def recorded_requests(cell_dir: Path) -> int:
    """Distinct request ids a cell directory holds rows for (its merged file, else its parts).

    Reads only the request_id column of the requests rows: chunk parts can be large.
    """
    files = [cell_dir / REQUESTS_FILE] if (cell_dir / REQUESTS_FILE).is_file() else sorted(
        (cell_dir / PARTS_DIR).glob("requests-*.parquet"))
    ids = [pq.read_table(f, columns=["request_id"]).column("request_id") for f in files]
    return len(pa.chunked_array([c for a in ids for c in a.chunks], pa.uint64()).unique()) if ids else 0


def set_aside(cell_dir: Path) -> Path | None:
    """Before a cell runs again: move an earlier attempt's files to ``attempts/<n>/``.

    Returns where they went (None when the cell directory held nothing of an attempt).
    """
    present = sorted(p.name for p in cell_dir.iterdir() if p.name != ATTEMPTS_DIR) if cell_dir.is_dir() else []
    if not present:
        return None
    n = 1
    while (cell_dir / ATTEMPTS_DIR / str(n)).exists():
        n += 1
    dest = cell_dir / ATTEMPTS_DIR / str(n)
    dest.mkdir(parents=True)
    for name in present:
        os.replace(cell_dir / name, dest / name)
    return dest


def read_cell(cell_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The (requests, chunks) tables of one completed cell."""
    return pl.read_parquet(cell_dir / REQUESTS_FILE), pl.read_parquet(cell_dir / CHUNKS_FILE)

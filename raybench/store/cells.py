"""Writing and reading one cell's raw tables.

Batches are streamed into Parquet as they arrive from the load generators, under temporary
names; ``close()`` renames them, so a cell that did not finish leaves no file that looks whole,
and ``abort()`` removes them. A write that fails (disk full) raises one ``StorageError`` naming
the file; batches after it are dropped, so that first error is the one reported.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from raybench.errors import StorageError
from raybench.store.rundir import storage_errors, tmp_path
from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA

REQUESTS_FILE = "requests.parquet"
CHUNKS_FILE = "chunks.parquet"
SUMMARY_FILE = "summary.json"


class CellWriter:
    """Receives record batches (a ``BatchSink``) and writes them to the cell's directory."""

    def __init__(self, cell_dir: Path) -> None:
        self.cell_dir = cell_dir
        self._files = {}
        try:
            for name, schema in ((REQUESTS_FILE, REQUESTS_SCHEMA), (CHUNKS_FILE, CHUNKS_SCHEMA)):
                with storage_errors(cell_dir / name):
                    cell_dir.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(tmp_path(cell_dir / name), schema, compression="zstd")
                    self._files[name] = (cell_dir / name, writer)
        except StorageError:
            self.abort()  # the file opened before the failing one goes too
            raise
        self.num_requests = 0
        self.num_chunks = 0
        self.failed: StorageError | None = None

    def write_requests(self, batch: pa.RecordBatch) -> None:
        if self._write(REQUESTS_FILE, batch):
            self.num_requests += batch.num_rows

    def write_chunks(self, batch: pa.RecordBatch) -> None:
        if self._write(CHUNKS_FILE, batch):
            self.num_chunks += batch.num_rows

    def _write(self, name: str, batch: pa.RecordBatch) -> bool:
        if self.failed is not None:
            return False
        final, writer = self._files[name]
        try:
            writer.write_batch(batch)
        except OSError as err:
            self.failed = StorageError.from_os_error(final, err)
            raise self.failed from None
        return True

    def close(self) -> None:
        for final, writer in self._files.values():
            with storage_errors(final):
                writer.close()
                os.replace(tmp_path(final), final)

    def abort(self) -> None:
        """Close without publishing; the temporary files go (a cell that did not finish is run again)."""
        for final, writer in self._files.values():
            with contextlib.suppress(OSError):  # a full disk fails the close too: the files go all the same
                writer.close()
            with contextlib.suppress(OSError):
                tmp_path(final).unlink(missing_ok=True)


def read_cell(cell_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The (requests, chunks) tables of one completed cell."""
    return pl.read_parquet(cell_dir / REQUESTS_FILE), pl.read_parquet(cell_dir / CHUNKS_FILE)

"""Writing and reading one cell's raw tables.

Batches are streamed into Parquet as they arrive from the load generators, under temporary
names; ``close()`` renames them, so a cell that did not finish leaves no file that looks whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from raybench.store.rundir import tmp_path
from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA

REQUESTS_FILE = "requests.parquet"
CHUNKS_FILE = "chunks.parquet"
SUMMARY_FILE = "summary.json"


class CellWriter:
    """Receives record batches (a ``BatchSink``) and writes them to the cell's directory."""

    def __init__(self, cell_dir: Path) -> None:
        self.cell_dir = cell_dir
        cell_dir.mkdir(parents=True, exist_ok=True)
        self._files = {
            name: (cell_dir / name, pq.ParquetWriter(tmp_path(cell_dir / name), schema, compression="zstd"))
            for name, schema in ((REQUESTS_FILE, REQUESTS_SCHEMA), (CHUNKS_FILE, CHUNKS_SCHEMA))
        }
        self.num_requests = 0
        self.num_chunks = 0

    def write_requests(self, batch: pa.RecordBatch) -> None:
        self._files[REQUESTS_FILE][1].write_batch(batch)
        self.num_requests += batch.num_rows

    def write_chunks(self, batch: pa.RecordBatch) -> None:
        self._files[CHUNKS_FILE][1].write_batch(batch)
        self.num_chunks += batch.num_rows

    def close(self) -> None:
        for final, writer in self._files.values():
            writer.close()
            os.replace(tmp_path(final), final)

    def abort(self) -> None:
        """Close without publishing: the temporary files stay for a post-mortem."""
        for _, writer in self._files.values():
            writer.close()


def read_cell(cell_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The (requests, chunks) tables of one completed cell."""
    return pl.read_parquet(cell_dir / REQUESTS_FILE), pl.read_parquet(cell_dir / CHUNKS_FILE)

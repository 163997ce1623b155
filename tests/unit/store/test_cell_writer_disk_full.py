"""A full disk while a cell's files are written: one line naming the file, what was kept and how to go on.

The error is injected at the writer seam (``OSError(ENOSPC)`` from Parquet's writer or from a file
write), where a real full disk raises it; nothing is left half-written.
"""

from __future__ import annotations

import errno
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raybench.errors import StorageError
from raybench.experiment import Experiment, Online, SimBackend
from raybench.runner import Runner, RunOptions
from raybench.store import cells as cells_module
from raybench.store.cells import CHUNKS_FILE, REQUESTS_FILE, CellWriter
from raybench.store.rundir import RunDir, storage_errors, write_json_atomic, write_table_atomic
from raybench.store.schema import CHUNKS_SCHEMA, ChunkKind

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _chunks(n: int) -> pa.RecordBatch:
    rows = [{"cell_id": "c", "request_id": i, "seq": 0, "t_ns": i, "n_tokens": 1, "kind": ChunkKind.TOKEN.value}
            for i in range(n)]
    return pa.RecordBatch.from_pylist(rows, schema=CHUNKS_SCHEMA)


class FullDiskWriter(pq.ParquetWriter):
    """Parquet's writer on a disk that fills up after ``room`` batches; closing fails too, as it does."""

    room = 1

    def write_batch(self, batch, row_group_size=None):
        if FullDiskWriter.room <= 0:
            raise ENOSPC
        FullDiskWriter.room -= 1
        return super().write_batch(batch, row_group_size)

    def close(self):
        was_open = self.is_open
        super().close()
        if FullDiskWriter.room <= 0 and was_open:
            raise ENOSPC


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cells_module.pq, "ParquetWriter", FullDiskWriter)
    FullDiskWriter.room = 2  # the first part is written whole; the second fills the disk as it closes
    writer = CellWriter(tmp_path / "cell")
    writer.write_chunks(_chunks(3))
    writer.flush()
    writer.write_chunks(_chunks(3))
    with pytest.raises(StorageError) as info:
        writer.flush()
    assert str(info.value) == f"cannot write {tmp_path / 'cell' / CHUNKS_FILE}: the disk is full"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # what the pool still hands over while it stops is dropped, so the first error is the one reported
    writer.write_chunks(_chunks(3))
    writer.write_requests(pa.RecordBatch.from_pylist([], schema=cells_module.REQUESTS_SCHEMA))
    writer.flush()
    assert writer.num_chunks == 3 and writer.failed is info.value
    writer.abort()  # nothing more is written on the full disk: no second error
    # the rows that reached the disk stay as a whole part; nothing half-written is left
    assert sorted(p.name for p in (tmp_path / "cell").rglob("*")) == ["chunks-000001.parquet", "parts"]


def test_atomic_writes_turn_a_full_disk_into_one_error_and_remove_the_temporary_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        (tmp_path / ".summary.parquet.tmp").write_bytes(b"half")
        raise ENOSPC

    monkeypatch.setattr("raybench.store.rundir.pq.write_table", full)
    with pytest.raises(StorageError, match=f"^cannot write {tmp_path / 'summary.parquet'}: the disk is full$"):
        write_table_atomic(tmp_path / "summary.parquet", pa.table({"a": [1]}))
    monkeypatch.setattr("pathlib.Path.write_text", lambda self, text: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(StorageError, match="summary.json: the disk is full$"):
        write_json_atomic(tmp_path / "summary.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_the_run_says_what_it_kept_and_how_to_resume(tmp_path, monkeypatch):
    rd = RunDir.create(tmp_path, "x")
    kept = rd.cell_dir("sim-online-c4-i8-o8")
    kept.mkdir(parents=True)
    (kept / "summary.json").write_text(json.dumps({"cell": {}}))
    experiment = Experiment(name="x", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(timing="fixed"),),
                            online=(Online(concurrency=[4, 8], input_len=8, output_len=8, num_prompts=4),))
    where = rd.cell_dir("sim-online-c8-i8-o8") / REQUESTS_FILE

    def disk_full(self):
        with storage_errors(where):  # as every write of the run dir raises it: the advice follows its errno
            raise ENOSPC

    monkeypatch.setattr(Runner, "_run_plan", disk_full)
    options = RunOptions(experiment_file=tmp_path / "exp.py")
    with pytest.raises(StorageError) as info:
        Runner(experiment, rd, options, report=lambda line: None).run()
    assert str(info.value) == (
        f"cannot write {where}: the disk is full; kept: 1 complete cell in {rd.path} (the cell being written is not); "
        f"free disk space, then: raybench run {tmp_path / 'exp.py'} --run-dir {rd.path}")
    assert "\n" not in str(info.value)


def test_a_full_disk_at_the_first_write_is_the_same_one_line(tmp_path, monkeypatch):
    original = pq.ParquetWriter

    def full_for_chunks(path, *args, **kwargs):
        if "chunks" in str(path):
            raise ENOSPC
        return original(path, *args, **kwargs)

    monkeypatch.setattr(cells_module.pq, "ParquetWriter", full_for_chunks)
    writer = CellWriter(tmp_path / "cell")
    writer.write_chunks(_chunks(2))
    with pytest.raises(StorageError, match=f"^cannot write {tmp_path / 'cell' / CHUNKS_FILE}: the disk is full$"):
        writer.flush()
    writer.abort()
    assert [p.name for p in (tmp_path / "cell").rglob("*")] == ["parts"]  # no part, no temporary file

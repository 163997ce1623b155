"""A disk that fills up during a run: one line (which file, what is kept, how to resume), nothing half-written.

``OSError(ENOSPC)`` is injected at the writer seam (Parquet's writer, where a real full disk
raises it) for the second cell; the first cell stays complete and a resume runs the rest.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from raybench.cli import main
from raybench.store import cells as cells_module
from raybench.store.rundir import RunDir

EXPERIMENT = """
from raybench.experiment import Experiment, Online, SimBackend
experiment = Experiment(name="diskfull", model="deepseek-ai/DeepSeek-R1",
                        backends=(SimBackend(timing="fixed", ttft_ms=5, itl_ms=1),),
                        online=(Online(concurrency=[2, 4], input_len=16, output_len=8, num_prompts=8),))
"""


class FullOnSecondCell(pq.ParquetWriter):
    def write_batch(self, batch, row_group_size=None):
        if "-c4-" in str(self.where):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write_batch(batch, row_group_size)

    def __init__(self, where, *args, **kwargs):
        self.where = where
        super().__init__(where, *args, **kwargs)


def test_a_full_disk_stops_the_run_with_one_line_and_a_resume_finishes_it(ray_local, tmp_path, monkeypatch):
    path = tmp_path / "diskfull.py"
    path.write_text(EXPERIMENT)
    out = tmp_path / "runs"
    with monkeypatch.context() as patch:
        patch.setattr(cells_module.pq, "ParquetWriter", FullOnSecondCell)
        result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--no-report"])
    assert result.exit_code == 1, result.output
    (rd_path,) = (out / "diskfull").iterdir()
    error = result.output.strip().splitlines()[-1]
    chunks = rd_path / "cells" / "sim-online-c4-i16-o8" / "chunks.parquet"
    assert error == (f"Error: cannot write {chunks}: the disk is full; kept: 1 complete cell in {rd_path} "
                     f"(the cell being written is not); free disk space, then: raybench run {path} --run-dir {rd_path}")
    assert "Traceback" not in result.output and "Errno" not in result.output
    rd = RunDir(rd_path)
    assert rd.cell_ids() == ["sim-online-c2-i16-o8"]
    assert not list(rd_path.rglob("*.tmp"))  # nothing half-written looks whole, nothing is left over

    again = CliRunner().invoke(main, ["run", str(path), "--run-dir", str(rd_path), "--no-report"])
    assert again.exit_code == 0, again.output
    assert rd.cell_ids() == ["sim-online-c2-i16-o8", "sim-online-c4-i16-o8"]
    assert Path(again.stdout.strip().splitlines()[-1]) == rd_path

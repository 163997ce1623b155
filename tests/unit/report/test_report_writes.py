"""The report's files are written whole under a name of this process's own: a `raybench report`
drawing into a run directory whose run draws its own report at the same moment never mixes them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raybench.report.build import write_text_atomic

WRITER = """
import sys
from raybench.report.build import write_text_atomic
path, letter = sys.argv[1], sys.argv[2]
for _ in range(200):
    write_text_atomic(__import__("pathlib").Path(path), letter * 200_000)
"""


def test_two_processes_writing_one_report_leave_one_whole_file(tmp_path: Path):
    path = tmp_path / "report.html"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), letter]) for letter in "ab"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    text = path.read_text()
    assert len(text) == 200_000 and len(set(text)) == 1  # one writer's file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "report.html"
    write_text_atomic(path, "old")

    def refuse(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["report.html"]

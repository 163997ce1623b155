"""The run directory's layout, and writes that never leave a half file looking whole.

    runs/<experiment>/<YYYYmmdd-HHMMSS>/
      plan.json  env.json  summary.parquet
      env.1.json ...   (earlier invocations on the same run dir, oldest first)
      cells/<cell_id>/requests.parquet  chunks.parquet  summary.json (its outcome inside)
      cells/<cell_id>/parts/         rows of a cell still running, or stopped mid-way
      cells/<cell_id>/attempts/<n>/  an earlier, unfinished attempt, set aside by a resume
      servers/<name>.log  <name>.json
      .lock            flock()ed by the one process writing the run dir; holds its pid and host

Every file written here (the tables, summaries, plan and env) is written under a temporary name,
fsynced, then renamed (and its folder fsynced), so neither a crash nor a power loss leaves a half
or empty file that looks whole. The report's files are only renamed: a report can be drawn again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raybench.errors import ConfigError, RunError, StorageError
from raybench.store.outcome import CellOutcome, OutcomeKind, outcome_of

_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_name(text: str) -> str:
    """A file-system-safe form of ``text`` (cell ids, experiment names)."""
    return _SAFE.sub("_", text).strip("_") or "unnamed"


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_json_atomic(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path(path).write_text(text)
        replace_durably(tmp_path(path), path)


def write_table_atomic(path: Path, table: pa.Table) -> None:
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path(path), compression="zstd")
        replace_durably(tmp_path(path), path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Written whole under a temporary name of its own and renamed, without fsync (for files that can be
    made again, such as a report): two processes writing one path at once leave one whole file or the
    other, never a mix, and a failed write leaves the old file and no temporary one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_durably(tmp: Path, path: Path) -> None:
    """Rename a written temporary file over ``path`` so that a power loss keeps one or the other, whole.

    Without the fsync before it, the file system may commit the rename before the data (ext4's
    delayed allocation does): after a power cut the name is there and the file is empty. The
    folder's fsync makes the rename itself survive; a system that cannot fsync a folder skips it.
    """
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@contextlib.contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """An OSError (disk full, read-only) while writing ``path``: its temporary file removed, a StorageError raised."""
    try:
        yield
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp_path(path).unlink(missing_ok=True)
        raise StorageError.from_os_error(path, err) from None


def storage_fix(err: StorageError) -> str:
    """What to do about a failed write, by its errno: freeing disk space helps only when the disk is full.

    storage_errors() raises the StorageError while handling the OSError (from None, so the line
    stays one line): that OSError is still its ``__context__``.
    """
    code = getattr(err.__context__, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the run directory writable"
    if code in (errno.ENOENT, errno.ENOTDIR):
        return "something moved or removed part of the run directory while the run wrote it: leave it to the run"
    return "fix the write error"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


LOCK_FILE = ".lock"
# file systems whose flock() is not supported: the run goes on unlocked rather than not at all
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)  # ENOTSUP != EOPNOTSUPP on macOS


class RunDir:
    """Paths inside one run directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None  # .lock's descriptor while this RunDir holds it

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held for as long as this process writes the run dir; a second writer gets a RunError at once.

        Two writers (a run and a --resume of it, or two runs given one --run-dir) would move each
        other's rows to attempts/ and overwrite each other's summaries. flock() rather than a file's
        existence: the kernel drops the lock when its process ends, however it ends, so a killed run
        never leaves a stale lock behind. Re-entrant on one RunDir: the CLI takes it before Ray
        starts, and the Runner it hands the RunDir to writes under the same lock. Readers take no
        lock (plan --run-dir), nor do report and compare, which add only files of their own, each
        written whole and renamed.
        """
        if self._lock_fd is not None:
            yield
            return
        self._lock_fd = _lock(self.path)
        try:
            yield
        finally:
            fd, self._lock_fd = self._lock_fd, None
            if fd >= 0:
                os.close(fd)

    @classmethod
    def create(cls, root: Path | str, experiment: str, now: dt.datetime | None = None) -> RunDir:
        stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        path = Path(root) / safe_name(experiment) / stamp
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            path = path.with_name(f"{stamp}-{os.getpid()}")
            path.mkdir(parents=True)
        except OSError as err:
            raise RunError(f"cannot create the run directory {path}: {err.strerror}") from err
        return cls(path)

    def cell_dir(self, cell_id: str) -> Path:
        return self.path / "cells" / safe_name(cell_id)

    def server_log(self, name: str) -> Path:
        return self.path / "servers" / f"{safe_name(name)}.log"

    @property
    def plan_json(self) -> Path:
        return self.path / "plan.json"

    @property
    def env_json(self) -> Path:
        return self.path / "env.json"

    @property
    def summary_parquet(self) -> Path:
        return self.path / "summary.parquet"

    def keep_previous_env(self) -> Path | None:
        """Before a resumed run writes env.json: the previous one moves to env.<n>.json, never overwritten."""
        if not self.env_json.is_file():
            return None
        n = 1
        while (self.path / f"env.{n}.json").exists():
            n += 1
        kept = self.path / f"env.{n}.json"
        os.replace(self.env_json, kept)
        return kept

    def completed_cells(self) -> dict[str, dict[str, Any]]:
        """Complete cells (directory name -> the cell settings its summary.json records).

        Complete means the summary's outcome says every planned request has a row; a cell
        with a summary that is incomplete or failed is not here, so a resume runs it again.
        """
        return {name: settings for name, (outcome, settings) in self.cell_outcomes().items() if outcome.complete}

    def cell_outcomes(self) -> dict[str, tuple[CellOutcome, dict[str, Any]]]:
        """Every cell directory's outcome and settings, complete or not.

        A cell without a summary but with row parts is one the run stopped in (the driver was
        killed or interrupted): incomplete, with the rows it kept counted.
        """
        from raybench.store.cells import PARTS_DIR, recorded_requests

        out: dict[str, tuple[CellOutcome, dict[str, Any]]] = {}
        summaries = dict(self._cell_summaries())
        for cell_dir in self._cell_dirs():
            summary = summaries.get(cell_dir.name)
            if summary is not None:
                path = cell_dir / "summary.json"
                try:
                    outcome = outcome_of(summary)
                except ConfigError as err:
                    raise RunError(f"{path}: {err}; {_DAMAGED_SUMMARY_FIX}") from err
                out[cell_dir.name] = (outcome, summary.get("cell") or {})
                continue
            if (cell_dir / PARTS_DIR).is_dir():
                ids = recorded_requests(cell_dir)
                out[cell_dir.name] = (CellOutcome(
                    kind=OutcomeKind.INCOMPLETE, planned_requests=self._planned(cell_dir.name), recorded_requests=ids,
                    reason=f"the run stopped mid-cell; {ids} request rows kept in parts/"), {})
        return out

    def check_resumable(self, experiment: str) -> None:
        """Before ``raybench run`` writes into this directory, or ``raybench plan`` marks cells done from it.

        A prediction's cells look complete, so a resume would skip them and leave modelled numbers
        standing as measured ones (and rewrite plan.json without its prediction flag); another
        experiment's run would get this one's cells beside its own, under one experiment name.
        Both flags are read: plan.json may be gone while the cells' summaries still say what they are.
        """
        plan = self._plan()
        if plan.get("prediction") or any(s.get("prediction") for _, s in self._cell_summaries()):
            raise RunError(f"{self.path} holds a prediction (raybench predict), not measurements, so no run can resume "
                           f"it: {_NEW_RUN_DIR}")
        there = plan.get("experiment")
        if there is not None and there != experiment:
            raise RunError(f"{self.path} holds a run of experiment {there!r}, not {experiment!r}: {_NEW_RUN_DIR}")

    def _plan(self) -> dict[str, Any]:
        """plan.json as an object; {} when there is none."""
        if not self.plan_json.is_file():
            return {}
        try:
            plan = json.loads(self.plan_json.read_text())
        except (OSError, ValueError) as err:
            raise RunError(f"{self.plan_json} is unreadable ({err}): move it away to start the plan afresh") from err
        if not isinstance(plan, dict):
            raise RunError(f"{self.plan_json} holds a JSON {json_type(plan)}, not a run's plan object: "
                           "move it away to start the plan afresh")
        return plan

    def _cell_dirs(self) -> list[Path]:
        cells = self.path / "cells"
        return sorted(p for p in cells.iterdir() if p.is_dir()) if cells.is_dir() else []

    def _cell_summaries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(cell directory name, its summary.json) for every cell that has one; RunError for a damaged one."""
        for cell_dir in self._cell_dirs():
            path = cell_dir / "summary.json"
            if not path.is_file():
                continue
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise RunError(f"{path} is unreadable ({err}): {_DAMAGED_SUMMARY_FIX}") from err
            if not isinstance(summary, dict):
                raise RunError(f"{path} holds a JSON {json_type(summary)}, not a cell summary object: "
                               f"{_DAMAGED_SUMMARY_FIX}")
            if not summary:  # outcome_of would judge it as an old summary of 0 requests: complete
                raise RunError(f"{path} is an empty object, so whether its cell is complete is unknown: "
                               f"{_DAMAGED_SUMMARY_FIX}")
            if not isinstance(summary.get("cell") or {}, dict):
                raise RunError(f"{path}: its \"cell\" is a JSON {json_type(summary['cell'])}, not the cell's settings "
                               f"object: {_DAMAGED_SUMMARY_FIX}")
            yield cell_dir.name, summary

    def _planned(self, name: str) -> int:
        """A cell's planned requests as plan.json records them (0 when unknown)."""
        try:
            cells = self._plan().get("cells")
        except RunError:  # only the planned count shown for a stopped cell depends on it
            return 0
        for c in cells if isinstance(cells, list) else []:
            if isinstance(c, dict) and safe_name(str(c.get("id"))) == name:
                try:
                    return int(c.get("num_prompts") or c.get("batch_size") or 0)
                except (TypeError, ValueError):
                    return 0
        return 0

    @classmethod
    def latest(cls, root: Path | str, experiment: str) -> RunDir:
        """The newest run of ``experiment`` under ``root`` (for ``raybench run --resume``)."""
        parent = Path(root) / safe_name(experiment)
        runs = sorted(p for p in parent.iterdir() if p.is_dir() and (p / "plan.json").is_file()) if parent.is_dir() else []
        if not runs:
            raise RunError(f"--resume: no earlier run of {experiment!r} under {parent}; "
                           "give the run directory with --run-dir, or leave out --resume to start one")
        return cls(runs[-1])

    def cell_ids(self) -> list[str]:
        """The cells that completed (every planned request accounted for)."""
        return sorted(self.completed_cells())

    def summaries(self) -> list[dict[str, Any]]:
        """Every cell's summary.json, complete or not, in plan.json's order (cells it does not list
        last): what summary.parquet holds, whichever invocations (--only, --resume) wrote them."""
        cells = self._plan().get("cells")
        order = {c.get("id"): i for i, c in enumerate(cells if isinstance(cells, list) else []) if isinstance(c, dict)}
        found = [summary for _, summary in self._cell_summaries()]
        return sorted(found, key=lambda summary: order.get(summary.get("cell_id"), len(order)))


def _lock(run_dir: Path) -> int:
    """``run_dir``'s lock, taken (its descriptor; -1 where the file system cannot lock), or a RunError naming its holder."""
    path = run_dir / LOCK_FILE
    with storage_errors(path):
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        return -1
    with storage_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with storage_errors(path):  # who holds it, for the error below; the lock itself is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except BlockingIOError as err:
        holder = _holder(fd)
        os.close(fd)
        raise RunError(f"another raybench process{holder} is writing {run_dir}: wait for it to finish, or choose "
                       "another directory (another --run-dir, or none for a new run directory under --out)") from err
    except OSError as err:
        os.close(fd)
        if err.errno in _NO_FLOCK:
            return -1
        raise StorageError.from_os_error(path, err) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it: " (pid P on host H)"; "" when unknown (not written yet, say)."""
    try:
        pid, host = os.pread(fd, 300, 0).decode().split()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    return f" (pid {pid} on {host})"


# A cell without summary.json is run again by a resume, and set_aside() first moves every file
# it holds to attempts/<n>/: the rows stay on disk, unlike after deleting the cell's directory.
_DAMAGED_SUMMARY_FIX = ("restore it from a copy, or move it aside (say, to summary.json.damaged): "
                        "a resume then runs that cell again and keeps its earlier files under attempts/")
_NEW_RUN_DIR = "run into a new directory (a --run-dir that does not exist yet, or none)"


def json_type(value: Any) -> str:
    """JSON's own name for a parsed value's type (as the report's errors name it)."""
    return "null" if value is None else {list: "array", str: "string", bool: "boolean", int: "number",
                                         float: "number"}.get(type(value), type(value).__name__)

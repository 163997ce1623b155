"""More streams than the cluster can host: refused in one line at once, or told while actors wait for room."""

from __future__ import annotations

import time

import pytest
import ray
from click.testing import CliRunner

from raybench.cli import main
from raybench.errors import RunError
from raybench.loadgen.pool import _wait_placed


def test_too_many_streams_is_refused_before_any_server_starts(ray_local, tmp_path):
    out = tmp_path / "runs"
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--sim-timing", "zero", "--concurrency", "100000",
                                       "--num-prompts", "100000", "--input-len", "8", "--output-len", "2",
                                       "--out", str(out)])
    elapsed_s = time.monotonic() - t0
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: cell sim-online-c100000-i8-o2: ") and "100,000 concurrent streams do not fit: the cluster can host at most" in line
    assert "add client nodes (on each: ray start --address=<head>:6379" in line
    assert elapsed_s < 30  # no server started, no actor waited for room
    assert not out.exists()  # and no run directory left behind


@ray.remote(num_cpus=1000)
class _TooBig:
    def ready(self) -> str:
        return "never"


def test_actors_without_room_are_reported_while_they_wait_then_one_error(ray_local):
    lines: list[str] = []
    actor = _TooBig.remote()
    try:
        with pytest.raises(RunError) as info:
            _wait_placed("c", [actor.ready.remote()], lines.append, limit_s=2.5, every_s=1.0)
    finally:
        ray.kill(actor)
    assert len(lines) >= 2 and all("cell c: 0 of 1 load-generator actors placed after" in line for line in lines)
    assert str(info.value).startswith("cell c: 1 of 1 load-generator actors found no room in ")

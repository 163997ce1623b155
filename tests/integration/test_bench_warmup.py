"""`raybench bench --warmup-requests`: the warm-up's requests reach the server before the cell, and
with 0 none do, so the server's own counters hold the cell's requests alone."""

import json

import polars as pl
import pytest
from click.testing import CliRunner

from raybench.cli import main


@pytest.mark.parametrize("warmups", [0, 3])
def test_the_server_counts_exactly_the_warm_up_requests_asked_for(ray_local, tmp_path, warmups):
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--sim-timing", "zero", "--input-len", "16",
                                       "--output-len", "4", "--num-prompts", "5", "--warmup-requests", str(warmups),
                                       "--no-report", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    [run_dir] = list(tmp_path.glob("bench/*"))
    [cell] = list(run_dir.glob("cells/*"))
    # the scraper's last row comes after the cell's last request (its start may race the cell's
    # first): the server generated 4 tokens for each warm-up request and each of the cell's 5
    generated = pl.read_parquet(cell / "server_metrics.parquet")["generation_tokens_total"].drop_nulls()
    assert generated.max() == 4 * (warmups + 5)
    assert json.loads((run_dir / "env.json").read_text())["experiment"]["warmup_requests"] == warmups
    assert pl.read_parquet(cell / "requests.parquet").height == 5


def test_a_negative_warmup_count_is_refused_as_a_flag(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--backend", "sim", "--warmup-requests", "-1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--warmup-requests" in result.output and "Traceback" not in result.output

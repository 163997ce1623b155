"""raybench calibrate on rows it cannot fit as they say: an unknown engine, a model that does not fit the GPU,
several models in one pair; and the model it fitted, recorded in each profile."""

import json

import polars as pl
import pytest
from click.testing import CliRunner

from raybench.calibration import load_reference, observation, predicted_row_error, seed_launches, select_rows
from raybench.cli import main
from raybench.report.sources import published_csv
from raybench.sim import costmodel
from raybench.sim.calibrate import fit_pair
from raybench.sim.profiles import OTHER_MODEL

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _published_rows(tmp_path, where, **changes):
    """Published CSV rows (hardware, backend, mode, output_len, prefix_len as ``where`` says), changed, as a file."""
    frame = pl.read_csv(published_csv(), infer_schema_length=0)
    for column, value in where.items():
        frame = frame.filter(pl.col(column) == value)
    frame = frame.with_columns([pl.lit(v).alias(k) for k, v in changes.items()])
    path = tmp_path / "rows.csv"
    frame.write_csv(path)
    return str(path), frame.height


def test_rows_naming_an_unknown_engine_are_fitted_as_generic_and_calibrate_says_so_once(tmp_path):
    csv, n = _published_rows(tmp_path, {"hardware": "MI300X", "backend": "vllm", "mode": "online",
                                        "output_len": "800", "shared_prefix_len": "0"}, backend="llamacpp")
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["calibrate", "--reference", csv, "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "llamacpp" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"--reference: {n} rows on MI300X name the engine 'llamacpp', which raybench does "
                               "not know: fitted as a generic engine (profile generic/MI300X"), lines[0]
    assert "vllm" in lines[0] and "sglang" in lines[0]  # the names it knows
    assert [p["engine"] for p in json.loads(out.read_text())["profiles"]] == ["generic"]


def test_rows_of_a_model_too_large_for_the_gpu_give_the_reason_once(tmp_path):
    csv, _ = _published_rows(tmp_path, {"hardware": "H200", "backend": "vllm", "mode": "online",
                                        "output_len": "800", "shared_prefix_len": "0"}, hardware="H100")
    result = CliRunner().invoke(main, ["calibrate", "--reference", csv, "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (error,) = result.stderr.splitlines()
    assert error.startswith("Error: calibrate vllm/H100: no KV reserve on the grid (48 to 0 GiB) runs every row's "
                            "requests; at 0 GiB, row H100-vllm online"), error
    assert "deepseek-ai/DeepSeek-R1 needs 78 GiB of weights per GPU on 8 x H100 (80 GiB each" in error
    assert error.count("vllm/H100") == 1
    assert not (tmp_path / "p.json").exists()


@pytest.fixture(scope="module")
def vllm_mi300x_rows():
    rows = select_rows(load_reference(["published"]),
                       "hardware=MI300X,backend=vllm,mode=online,concurrency=4|8|128,output_len=800,prefix_len=0")
    return list(rows.iter_rows(named=True))


def _observations(rows, model):
    from raybench.calibration import row_setting

    found = costmodel.find_model(model)
    return [observation(row, row_setting(row, seed_launches()), found) for row in rows]


def test_a_profile_records_the_model_of_the_rows_it_was_fitted_on(vllm_mi300x_rows):
    from dataclasses import replace

    deepseek = _observations(vllm_mi300x_rows, "deepseek-ai/DeepSeek-R1")
    fit = fit_pair(deepseek)
    assert fit.profile.fitted_model == "deepseek-ai/DeepSeek-R1"
    assert OTHER_MODEL not in predicted_row_error(deepseek[0], fit.profile).extrapolated
    llama_rows = [replace(o, model=LLAMA) for o in deepseek]
    assert fit_pair(llama_rows).profile.fitted_model == LLAMA
    # a row of another model predicted with this profile is marked
    assert OTHER_MODEL in predicted_row_error(llama_rows[0], fit.profile).extrapolated


def test_rows_of_two_models_in_one_pair_are_refused(vllm_mi300x_rows):
    from dataclasses import replace

    deepseek = _observations(vllm_mi300x_rows, "deepseek-ai/DeepSeek-R1")
    with pytest.raises(ValueError, match=r"its rows ran 2 models \(deepseek-ai/DeepSeek-R1, meta-llama/Llama-3.1-8B-"
                                         r"Instruct\), and a profile holds for one"):
        fit_pair([deepseek[0], replace(deepseek[1], model=LLAMA)])

"""A --profiles file: its model recorded (absent: DeepSeek-R1), and no key it holds silently dropped."""

import json

import pytest
from click.testing import CliRunner

from raybench.cli import main
from raybench.sim.config import SimConfigError
from raybench.sim.profiles import OTHER_MODEL, default_profiles_path, load_profiles


def _shipped() -> dict:
    return json.loads(default_profiles_path().read_text())


def test_the_shipped_profiles_record_the_model_they_were_fitted_on():
    for profile in load_profiles().values():
        assert profile.fitted_model == "deepseek-ai/DeepSeek-R1"
    assert all(p["fitted_model"] == "deepseek-ai/DeepSeek-R1" for p in _shipped()["profiles"])
    assert "fitted_model" in _shipped()["meaning"]


def test_a_profiles_file_written_before_fitted_model_loads_as_fitted_on_deepseek_r1(tmp_path):
    data = _shipped()
    for p in data["profiles"]:
        del p["fitted_model"]
    del data["meaning"]["fitted_model"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = load_profiles(tmp_path / "old.json")
    assert {p.fitted_model for p in old.values()} == {"deepseek-ai/DeepSeek-R1"}
    vllm = old["vllm/H200"]
    assert vllm.extrapolated({"kv_limited"}, "deepseek-ai/DeepSeek-R1") == ()
    assert vllm.extrapolated({"kv_limited"}, "deepseek-r1") == ()  # an alias is the same model
    assert vllm.extrapolated({"kv_limited"}, "meta-llama/Llama-3.1-8B-Instruct") == (OTHER_MODEL,)


def _with(tmp_path, change) -> str:
    data = _shipped()
    change(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_misspelt_profile_field_is_refused_naming_it_and_the_fields(tmp_path):
    path = _with(tmp_path, lambda d: d["profiles"][2].update(eager_factr=3))
    with pytest.raises(SimConfigError) as err:
        load_profiles(path)
    message = str(err.value)
    assert message.startswith("profiles[2].eager_factr=3 is not allowed: no profile field has that name "
                              "(did you mean 'eager_factor'?); the fields: engine, gpu, "), message
    assert "fitted_regimes" in message and "\n" not in message


def test_an_unknown_top_level_key_is_refused(tmp_path):
    path = _with(tmp_path, lambda d: d.update(profile_notes="x"))
    with pytest.raises(SimConfigError, match=r"key='profile_notes' is not allowed: a profiles file holds 'meaning' "
                                             r"and 'profiles' only"):
        load_profiles(path)


def test_predict_with_an_unknown_profile_field_is_a_one_line_error_and_writes_nothing(tmp_path):
    path = _with(tmp_path, lambda d: [p.update(foo=1) for p in d["profiles"]])
    experiment_file = tmp_path / "exp.py"
    experiment_file.write_text(
        "from raybench.backends.seed import SEED_VLLM_H200\n"
        "from raybench.experiment import Experiment, Hardware, Online\n"
        "experiment = Experiment(name='e', model='deepseek-ai/DeepSeek-R1', backends=(SEED_VLLM_H200,),\n"
        "    hardware={'vllm-h200': Hardware(name='H200', count=8)}, warmup_requests=0,\n"
        "    online=(Online(concurrency=(2,), input_len=100, output_len=10, num_prompts=4),))\n")
    result = CliRunner().invoke(main, ["predict", str(experiment_file), "--profiles", path, "--no-report",
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1 and not (tmp_path / "runs").exists()
    assert result.stderr.startswith("Error: --profiles: profiles[0].foo=1 is not allowed: no profile field has that "
                                    "name; the fields: ")
    assert len(result.stderr.splitlines()) == 1

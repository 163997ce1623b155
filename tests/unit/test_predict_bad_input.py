"""raybench predict on input it cannot stand behind: another model's profile, cells that cannot run, --out a run dir."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from raybench.backends import seed
from raybench.backends.vllm import VLLMBackend
from raybench.cli import main
from raybench.errors import ConfigError
from raybench.experiment import Experiment, Hardware, Online
from raybench.predict import extrapolation_lines, predict_run
from raybench.sim.profiles import dump_profiles, load_profiles

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _experiment(model="deepseek-ai/DeepSeek-R1", gpu="H200", count=8, backend=seed.SEED_VLLM_H200, online=None,
                warmup_requests=1):
    online = online or (Online(concurrency=(4,), input_len=100, output_len=10, num_prompts=8),)
    return Experiment(name="bad", model=model, backends=(backend,), hardware={backend.name: Hardware(name=gpu, count=count)},
                      online=online, warmup_requests=warmup_requests)


def test_a_prediction_for_another_model_than_its_profile_s_is_marked_and_said_once(tmp_path):
    experiment_file = tmp_path / "llama.py"
    experiment_file.write_text(
        "from raybench.backends.vllm import VLLMBackend\n"
        "from raybench.experiment import Experiment, Hardware, Online\n"
        f"experiment = Experiment(name='llama', model={LLAMA!r}, backends=(VLLMBackend(name='v', tp=1),),\n"
        "    hardware={'v': Hardware(name='H200', count=1)}, warmup_requests=0,\n"
        "    online=(Online(concurrency=(2, 4), input_len=100, output_len=10, num_prompts=4),))\n")
    result = CliRunner().invoke(main, ["predict", str(experiment_file), "--out", str(tmp_path / "runs"), "--no-report"])
    assert result.exit_code == 0, result.output
    # the shipped vllm/H200 profile was fitted on DeepSeek-R1's rows: every cell says so, the stderr once
    lines = [line for line in result.stderr.splitlines() if "other_model" in line]
    assert len(lines) == 1 and "2 cells" in lines[0], result.stderr
    assert "deepseek-ai/DeepSeek-R1" in lines[0] and "raybench calibrate" in lines[0]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    summaries = [json.loads(p.read_text()) for p in run_dir.glob("cells/*/summary.json")]
    assert len(summaries) == 2
    for summary in summaries:
        assert "other_model" in summary["extrapolated"]
        assert summary["predicted_with"]["fitted_model"] == "deepseek-ai/DeepSeek-R1"


def test_a_prediction_for_the_profile_s_own_model_is_not_marked(tmp_path):
    experiment = _experiment(model="deepseek-r1")  # an alias of the shipped profiles' model
    _, summaries = predict_run(experiment, experiment.cells(), tmp_path, report=False)
    assert summaries[0]["extrapolated"] == []
    assert summaries[0]["predicted_with"]["fitted_model"] == "deepseek-ai/DeepSeek-R1"
    assert extrapolation_lines(summaries) == []


def test_a_profile_fitted_on_the_cell_s_model_makes_no_other_model_mark(tmp_path):
    from dataclasses import replace

    llama = replace(load_profiles()["vllm/H200"], fitted_model=LLAMA)
    dump_profiles([llama], tmp_path / "llama.json")
    experiment = _experiment(model=LLAMA, count=1, backend=VLLMBackend(name="v", tp=1))
    _, (summary,) = predict_run(experiment, experiment.cells(), tmp_path / "runs",
                                profiles_path=str(tmp_path / "llama.json"), report=False)
    assert "other_model" not in summary["extrapolated"]


def _fails_before_writing(experiment, out, **kwargs):
    with pytest.raises(ConfigError) as err:
        predict_run(experiment, experiment.cells(), out, report=False, **kwargs)
    assert not out.exists(), sorted(p.relative_to(out) for p in out.rglob("*"))  # no run dir, not even an empty one
    message = str(err.value)
    assert "\n" not in message
    return message


def test_an_unknown_model_stops_predict_before_it_writes_anything(tmp_path):
    message = _fails_before_writing(_experiment(model="my-org/unknown"), tmp_path / "runs")
    assert "'my-org/unknown' has no simulator model" in message


def test_an_unknown_gpu_with_a_profile_stops_predict_before_it_writes_anything(tmp_path):
    from dataclasses import replace

    dump_profiles([replace(load_profiles()["vllm/H200"], gpu="B200")], tmp_path / "b200.json")
    message = _fails_before_writing(_experiment(gpu="B200"), tmp_path / "runs", profiles_path=str(tmp_path / "b200.json"))
    assert "unknown GPU of backend vllm-h200 'B200'" in message


def test_weights_that_do_not_fit_stop_predict_before_it_writes_anything(tmp_path):
    from dataclasses import replace

    dump_profiles([replace(load_profiles()["vllm/H200"], gpu="H100")], tmp_path / "h100.json")
    message = _fails_before_writing(_experiment(gpu="H100"), tmp_path / "runs", profiles_path=str(tmp_path / "h100.json"))
    assert "needs 78 GiB of weights per GPU on 8 x H100" in message


def test_a_later_cell_beyond_the_context_stops_predict_before_the_first_and_names_its_own_lengths(tmp_path):
    online = (Online(concurrency=(4,), input_len=3200, output_len=800, num_prompts=4),
              Online(concurrency=(4,), input_len=170000, output_len=800, num_prompts=4))
    message = _fails_before_writing(_experiment(online=online), tmp_path / "runs")
    assert "i170000-o800" in message and "every request would be refused" in message
    # the cell's own 800 output tokens, not the 16 of the warm-up that used to meet the limit first
    assert "takes 170800 (170000 in the prompt, 800 in the completion)" in message, message


def test_a_warm_up_the_server_would_refuse_stops_predict_before_it_writes_anything_and_says_so(tmp_path):
    # one prompt (95 words) even with the warm-up's 16 output tokens passes a max_model_len of 100; the others fit
    lengths = [(95, 30), (40, 4), (12, 30), (50, 11)]
    records = [{"conversations": [{"from": "human", "value": " ".join(["w"] * p)},
                                  {"from": "gpt", "value": " ".join(["r"] * o)}]} for p, o in lengths]
    (tmp_path / "chats.json").write_text(json.dumps(records))
    backend = VLLMBackend(name="vllm-h200", tp=8, max_model_len=100)
    online = (Online(concurrency=(2,), input_len=3200, output_len=800, num_prompts=4, dataset="sharegpt",
                     dataset_path=str(tmp_path / "chats.json")),)  # a data set's cell: the file's lengths
    message = _fails_before_writing(_experiment(backend=backend, online=online, warmup_requests=4), tmp_path / "runs")
    assert "its warm-up (its first 4 requests with at most 16 output tokens" in message
    assert "111 (95 in the prompt, 16 in the completion)" in message
    # without a warm-up the first request is refused (an HTTP 400 row) and the rest are predicted
    cold = _experiment(backend=backend, online=online, warmup_requests=0)
    _, (summary,) = predict_run(cold, cold.cells(), tmp_path / "ok", report=False)
    assert summary["completed"] == 3


def test_predict_out_an_existing_run_dir_is_a_one_line_error_and_nests_nothing(tmp_path):
    experiment = _experiment()
    run_dir, _ = predict_run(experiment, experiment.cells(), tmp_path / "runs", report=False)
    before = sorted(run_dir.path.rglob("*"))
    with pytest.raises(ConfigError, match=r"is a run directory; --out takes the root that run directories go under "
                                          r"\(e.g. runs\)"):
        predict_run(experiment, experiment.cells(), run_dir.path, report=False)
    assert sorted(run_dir.path.rglob("*")) == before


def test_predict_out_a_run_dir_on_the_command_line(tmp_path):
    experiment_file = tmp_path / "exp.py"
    experiment_file.write_text(
        "from raybench.backends.seed import SEED_VLLM_H200\n"
        "from raybench.experiment import Experiment, Hardware, Online\n"
        "experiment = Experiment(name='e', model='deepseek-ai/DeepSeek-R1', backends=(SEED_VLLM_H200,),\n"
        "    hardware={'vllm-h200': Hardware(name='H200', count=8)}, warmup_requests=0,\n"
        "    online=(Online(concurrency=(2,), input_len=100, output_len=10, num_prompts=4),))\n")
    args = ["predict", str(experiment_file), "--no-report", "--out"]
    first = CliRunner().invoke(main, [*args, str(tmp_path / "runs")])
    assert first.exit_code == 0, first.output
    run_dir = first.stdout.strip().splitlines()[-1]
    result = CliRunner().invoke(main, [*args, run_dir])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (f"Error: --out {run_dir} is a run directory; --out takes the root that run directories "
                             "go under (e.g. runs), and the prediction goes to ROOT/e-prediction/STAMP\n")
    assert not (Path(run_dir) / "e-prediction").exists()

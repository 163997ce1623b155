"""predict --reference refuses a prediction in its own words (it used to speak of calibrate)."""

from click.testing import CliRunner

from raybench.cli import main

TINY = '''
from raybench.backends.vllm import VLLMBackend
from raybench.experiment import Experiment, Hardware, Online

experiment = Experiment(
    name="tiny", model="meta-llama/Llama-3.1-8B-Instruct", backends=(VLLMBackend(name="v", tp=1),),
    hardware={"v": Hardware(name="H200", count=1)}, warmup_requests=0,
    online=(Online(concurrency=(2,), input_len=100, output_len=10, num_prompts=4),),
)
'''


def test_predict_refuses_a_prediction_as_reference_naming_predict(tmp_path):
    experiment_file = tmp_path / "tiny.py"
    experiment_file.write_text(TINY)
    args = ["predict", str(experiment_file), "--out", str(tmp_path / "runs"), "--no-report"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    prediction = first.stdout.strip().splitlines()[-1]

    result = CliRunner().invoke(main, [*args, "--reference", prediction])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: --reference {prediction} holds predictions (raybench predict), not measurements: "
                             "predict --reference compares the prediction with measured results (a raybench run, "
                             "a results file, or published)\n")

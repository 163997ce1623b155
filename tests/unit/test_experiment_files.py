"""Bad experiment files are rejected before any server starts, with file, line, field, value and what is allowed."""

from __future__ import annotations

import textwrap

import pytest

from raybench.errors import ConfigError
from raybench.experiment import load_experiment
from raybench.plan import check_hardware

HEAD = "from raybench.experiment import Experiment, Hardware, Offline, Online, VLLMBackend\n"


def _load(tmp_path, body: str):
    path = tmp_path / "exp.py"
    path.write_text(HEAD + textwrap.dedent(body))
    return path, load_experiment(path)


def _message(tmp_path, body: str) -> tuple[str, str]:
    path = tmp_path / "exp.py"
    path.write_text(HEAD + textwrap.dedent(body))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    return str(path), str(info.value)


def test_syntax_error_names_file_and_line(tmp_path):
    path, msg = _message(tmp_path, "experiment = Experiment(\n    name='x',,\n)\n")
    assert msg.startswith(f"{path}:3: syntax error")


def test_unknown_field_names_file_line_field_and_the_allowed_fields(tmp_path):
    path, msg = _message(tmp_path, """\
        sweep = Online(concurrency=(4,), input_len=10, output_len=5, num_prompts=3,
                       max_concurency=4)
        """)
    assert msg.startswith(f"{path}:2: ")
    assert "unexpected keyword argument 'max_concurency'" in msg
    assert "allowed: burstiness, concurrency, dataset, input_len" in msg


def test_wrong_type_names_field_value_and_what_is_allowed(tmp_path):
    path, msg = _message(tmp_path, """\
        x = 1
        sweep = Offline(batch_sizes=(32,), input_len="3200", output_len=800)
        """)
    assert msg == f"{path}:3: input_len='3200' is not allowed: an integer >= 1"


def test_empty_sweep_is_rejected(tmp_path):
    path, msg = _message(tmp_path, "sweep = Online(concurrency=(), input_len=10, output_len=5, num_prompts=3)\n")
    assert msg == f"{path}:2: concurrency=() is not allowed: a non-empty list of integers >= 1"


def test_an_experiment_without_sweeps_is_rejected(tmp_path):
    path, msg = _message(tmp_path, "experiment = Experiment(name='x', model='m', backends=(VLLMBackend(name='v', tp=8),))\n")
    assert msg == f"{path}:2: online/offline=() is not allowed: at least one sweep"


def test_hardware_with_no_matching_ray_resource_is_rejected_before_servers_start(tmp_path):
    _, experiment = _load(tmp_path, """\
        experiment = Experiment(
            name="x", model="m", backends=(VLLMBackend(name="vllm-h200", tp=8),),
            hardware={"vllm-h200": Hardware(name="H200", count=8)},
            offline=(Offline(batch_sizes=(32,), input_len=10, output_len=5),),
        )
        """)
    with pytest.raises(ConfigError) as info:
        check_hardware(experiment, {"CPU": 16.0, "GPU": 8.0, "node:10.0.0.1": 1.0})
    assert str(info.value).startswith(
        "hardware 'H200' of backend 'vllm-h200' needs the Ray resource 'H200' x 8, but the cluster has 0; "
        "its resources: CPU, GPU. Start the nodes with ray start --resources '{\"H200\": 8}'")
    check_hardware(experiment, {"CPU": 16.0, "GPU": 8.0, "H200": 8.0})  # present: no error


def test_unknown_hardware_backend_names_the_backends(tmp_path):
    path, msg = _message(tmp_path, """\
        experiment = Experiment(
            name="x", model="m", backends=(VLLMBackend(name="vllm-h200", tp=8),),
            hardware={"vllm-h100": Hardware(name="H100")},
            offline=(Offline(batch_sizes=(32,), input_len=10, output_len=5),),
        )
        """)
    assert msg.startswith(f"{path}:2: unknown hardware 'vllm-h100'; available: vllm-h200.")

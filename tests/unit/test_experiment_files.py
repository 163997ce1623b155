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
    assert "allowed: burstiness, concurrency, dataset, dataset_path, force_output_len, input_len" in msg


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
            name="x", model="m",
            backends=(VLLMBackend(name="vllm-h200", tp=8), VLLMBackend(name="vllm-mi300x", tp=8)),
            hardware={"vllm-h200": Hardware(name="H200", count=8), "vllm-mi300x": Hardware(name="MI300X")},
            offline=(Offline(batch_sizes=(32,), input_len=10, output_len=5),),
        )
        """)
    h100_node = {"CPU": 16.0, "GPU": 8.0, "accelerator_type:H100": 1.0, "node:10.0.0.1": 1.0}
    with pytest.raises(ConfigError) as info:
        check_hardware(experiment, h100_node)
    assert str(info.value) == (
        "hardware 'H200' of backend 'vllm-h200' needs a node whose GPUs Ray detects as 'H200', but the cluster has "
        "none (accelerator types: H100; GPUs: 8). Run on H200 nodes, set Hardware(accelerator_type=...) to the type "
        "`ray status` shows, Hardware(resource=...) to place by a custom resource, or use --simulate")
    with pytest.raises(ConfigError, match="Ray detects as 'AMD-Instinct-MI300X-OAM'"):
        check_hardware(experiment, {**h100_node, "accelerator_type:H200": 1.0})
    with pytest.raises(ConfigError) as info:
        check_hardware(experiment, {"CPU": 16.0, "GPU": 4.0, "accelerator_type:H200": 1.0,
                                    "accelerator_type:AMD-Instinct-MI300X-OAM": 1.0})
    assert str(info.value) == ("backend 'vllm-h200' needs 8 GPUs for one server, but the cluster has 4. "
                               "Add GPU nodes, lower its tensor/pipeline parallelism, or use --simulate")
    check_hardware(experiment, {"CPU": 32.0, "GPU": 16.0, "accelerator_type:H200": 1.0,
                                "accelerator_type:AMD-Instinct-MI300X-OAM": 1.0})  # present: no error
    # a run of the H200 server alone (--only backend=vllm-h200) needs no MI300X node
    check_hardware(experiment, {"CPU": 16.0, "GPU": 8.0, "accelerator_type:H200": 1.0}, backends=["vllm-h200"])


def test_hardware_placed_by_a_custom_resource(tmp_path):
    _, experiment = _load(tmp_path, """\
        experiment = Experiment(
            name="x", model="m", backends=(VLLMBackend(name="vllm-h200", tp=8),),
            hardware={"vllm-h200": Hardware(name="H200", count=8, resource="h200-pool")},
            offline=(Offline(batch_sizes=(32,), input_len=10, output_len=5),),
        )
        """)
    assert experiment.backends[0].actor_options()["resources"] == {"h200-pool": 8}
    with pytest.raises(ConfigError) as info:
        check_hardware(experiment, {"CPU": 16.0, "GPU": 8.0, "accelerator_type:H200": 1.0, "node:10.0.0.1": 1.0})
    assert str(info.value) == (
        "hardware 'H200' of backend 'vllm-h200' needs the Ray resource 'h200-pool' x 8, but the cluster has 0; "
        "its resources: CPU, GPU, accelerator_type:H200. Start the nodes with "
        "ray start --resources '{\"h200-pool\": 8}', or use --simulate")
    check_hardware(experiment, {"CPU": 16.0, "GPU": 8.0, "h200-pool": 8.0})


def test_unknown_hardware_backend_names_the_backends(tmp_path):
    path, msg = _message(tmp_path, """\
        experiment = Experiment(
            name="x", model="m", backends=(VLLMBackend(name="vllm-h200", tp=8),),
            hardware={"vllm-h100": Hardware(name="H100")},
            offline=(Offline(batch_sizes=(32,), input_len=10, output_len=5),),
        )
        """)
    assert msg.startswith(f"{path}:2: unknown hardware 'vllm-h100'; available: vllm-h200.")

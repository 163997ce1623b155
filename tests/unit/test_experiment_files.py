"""Bad experiment files are rejected before any server starts, with file, line, field, value and what is allowed."""

from __future__ import annotations

import textwrap

import pytest

from raybench.errors import ConfigError
from raybench.experiment import load_experiment
from raybench.plan import check_hardware, resolve

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
    assert msg == f"{path}:2: concurrency=() is not allowed: a non-empty list/tuple of ints >= 1, e.g. concurrency=[1, 4, 16]"


def test_a_bare_int_for_a_sweep_axis_names_the_field_and_the_shape(tmp_path):
    path, msg = _message(tmp_path, "sweep = Online(concurrency=4, input_len=10, output_len=5, num_prompts=3)\n")
    assert msg == f"{path}:2: concurrency=4 is not allowed: a non-empty list/tuple of ints >= 1, e.g. concurrency=[4]"
    path, msg = _message(tmp_path, "sweep = Offline(batch_sizes=32, input_len=10, output_len=5)\n")
    assert msg == f"{path}:2: batch_sizes=32 is not allowed: a non-empty list/tuple of ints >= 1, e.g. batch_sizes=[32]"


@pytest.mark.parametrize(("body", "line", "expected"), [
    ("x = 1\nexperiment = Experiment(name='x', model=undefined_name)\n", 3,
     "NameError: name 'undefined_name' is not defined"),
    ("import raybench_no_such_module\n", 2, "ModuleNotFoundError: No module named 'raybench_no_such_module'"),
    ("\n\nraise RuntimeError('not on this cluster')\n", 4, "RuntimeError: not on this cluster"),
    ("def helper():\n    return 1 / 0\nexperiment = helper()\n", 3, "ZeroDivisionError: division by zero"),
])
def test_any_exception_in_the_file_is_one_line_with_file_line_and_message(tmp_path, body, line, expected):
    path, msg = _message(tmp_path, body)
    assert msg == f"{path}:{line}: {expected}"
    assert "\n" not in msg and "Traceback" not in msg


@pytest.mark.parametrize(("sweep", "expected"), [
    ('Offline(batch_sizes=[4], input_len=8, output_len=8, method="bogus")',
     "unknown method 'bogus'; available: burst, engine."),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, dataset="sharepgt")',
     "unknown dataset 'sharepgt'; available: custom, multiturn, prefix, random, sharegpt, trace. Did you mean 'sharegpt'?"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, dataset="sharegpt")',
     "dataset_path=None is not allowed: a file for dataset sharegpt or custom or trace, None for the others"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, range_ratio="0.1")',
     "range_ratio='0.1' is not allowed: a number with 0 <= range_ratio < 1"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, request_rate=0)',
     "request_rate=0 is not allowed: a number > 0 (math.inf = all at once)"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, burstiness=None)',
     "burstiness=None is not allowed: a finite number > 0 (1 = Poisson, < 1 burstier)"),
    # inf passed validation and failed only once the cell ran, and again on every resume
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, request_rate=10, burstiness=float("inf"))',
     "burstiness=inf is not allowed: a finite number > 0 (1 = Poisson, < 1 burstier)"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, dataset="prefix", prefix_len=8)',
     "prefix_len=8 is not allowed: below input_len (8): input_len counts the shared prefix plus the question"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4, only="vllm")',
     "only='vllm' is not allowed: a tuple of backend names, e.g. ('vllm-h200',)"),
    ('Online(concurrency=[4.0], input_len=8, output_len=8, num_prompts=4)',
     "concurrency=4.0 is not allowed: each entry an int >= 1, e.g. concurrency=[1, 4, 16]"),
    # sizes that would exhaust memory building the cell: refused, not a MemoryError mid-run
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=10**7 + 1)',
     "num_prompts=10000001 is not allowed: at most 10,000,000 requests a cell: a cell keeps every request"),
    (('Online(concurrency=[4], input_len=80, output_len=8, num_prompts=4, dataset="prefix", num_groups=10**4, '
      'prompts_per_group=10**4)'),
     "prompts_per_group=10000 is not allowed: at most 10,000,000 requests a cell (a cell of 100,000,000 requests)"),
    ('Online(concurrency=[4], input_len=8, output_len=8, num_prompts=10**6, dataset="multiturn", num_turns=20)',
     "num_prompts=1000000 is not allowed: at most 10,000,000 requests a cell (a cell of 20,000,000 requests)"),
    ('Offline(batch_sizes=[32, 10**8], input_len=8, output_len=8)',
     "batch_sizes=100000000 is not allowed: at most 10,000,000 requests a cell:"),
    ('Online(concurrency=[4], input_len=10**10, output_len=8, num_prompts=4)',
     "input_len=10000000000 is not allowed: at most 10,000,000 tokens"),
    ('Offline(batch_sizes=[4], input_len=8, output_len=10**8)',
     "output_len=100000000 is not allowed: at most 10,000,000 tokens"),
])
def test_every_sweep_field_is_validated_by_name(tmp_path, sweep, expected):
    path, msg = _message(tmp_path, f"sweep = {sweep}\n")
    assert msg.startswith(f"{path}:2: {expected}"), msg


@pytest.mark.parametrize(("fields", "expected"), [
    ("backends=VLLMBackend(name='v', tp=8)", "backends=VLLMBackend("),
    ("backends=(VLLMBackend(name='v', tp=8),), online=Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4)",
     "online=Online("),
    ("backends=(VLLMBackend(name='v', tp=8),), online=(), offline=(), goodput_slos_ms={'ttft_ms': 5}",
     "goodput_slos_ms={'ttft_ms': 5} is not allowed: keys ttft, tpot, e2el"),
    ("backends=(VLLMBackend(name='v', tp=8),), online=(), offline=(), goodput_slos_ms={'ttft': float('inf')}",
     "goodput_slos_ms={'ttft': inf} is not allowed: keys ttft, tpot, e2el mapped to finite milliseconds > 0"),
])
def test_experiment_fields_are_validated_by_name(tmp_path, fields, expected):
    path, msg = _message(tmp_path, f"experiment = Experiment(name='x', model='m', {fields})\n")
    assert msg.startswith(f"{path}:2: {expected}"), msg


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


SIM_HEAD = "from raybench.experiment import Experiment, Online, SimBackend\n"


@pytest.mark.parametrize(("backend", "expected"), [
    ('SimBackend(gpu="A100")', "SimBackend 'sim': gpu='A100' is not allowed; the simulator's GPU profiles: H100, H200, MI300X"),
    ('SimBackend(profile="tgi")',
     "SimBackend 'sim': profile='tgi' is not allowed; the simulator's engine profiles: generic, sglang, trtllm, trtllm-engine, vllm"),
])
def test_simulator_profiles_that_do_not_exist_are_refused_when_the_file_loads(tmp_path, backend, expected):
    path = tmp_path / "exp.py"
    path.write_text(SIM_HEAD + f"experiment = Experiment(name='x', model='deepseek-ai/DeepSeek-R1', backends=({backend},),\n"
                    "    online=(Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4),))\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value) == f"{path}:2: {expected}"


@pytest.mark.parametrize(("backend", "model", "expected"), [
    ('SimBackend(gpu="H100", num_gpus=1)', "deepseek-ai/DeepSeek-R1", "SimBackend 'sim': num_gpus=1 is not allowed"),
    ("SimBackend()", "my-org/unprofiled", "SimBackend 'sim': model='my-org/unprofiled' is not allowed: for engine timing"),
])
def test_a_model_the_simulator_cannot_serve_is_refused_by_the_plan(tmp_path, backend, model, expected):
    path = tmp_path / "exp.py"
    path.write_text(SIM_HEAD + f"experiment = Experiment(name='x', model={model!r}, backends=({backend},),\n"
                    "    online=(Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4),))\n")
    with pytest.raises(ConfigError) as info:
        resolve(load_experiment(path))
    assert str(info.value).startswith(expected), str(info.value)


def test_fixed_timing_serves_any_model_name(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(SIM_HEAD + "experiment = Experiment(name='x', model='my-org/unprofiled', "
                    "backends=(SimBackend(timing='fixed'),),\n"
                    "    online=(Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4),))\n")
    assert resolve(load_experiment(path))[0].model == "my-org/unprofiled"


@pytest.mark.parametrize("name", ["基准测试", "!!!", "tab\there"])
def test_an_experiment_name_must_make_a_run_directory_and_a_metric_tag(tmp_path, name):
    """Non-ASCII names broke Ray's metric tags mid-run, and names without a letter or digit all
    became the run directory 'unnamed', where one experiment resumed another's run."""
    path, msg = _message(tmp_path, f"experiment = Experiment(name={name!r}, model='m', "
                                   "backends=(VLLMBackend(name='v', tp=8),), "
                                   "online=(Online(concurrency=[4], input_len=8, output_len=8, num_prompts=4),))\n")
    assert msg.startswith(f"{path}:2: name={name!r} is not allowed: printable ASCII with a letter or digit"), msg


@pytest.mark.parametrize("code", [0, 3])
def test_an_experiment_file_that_exits_is_an_error_not_a_silent_end(tmp_path, code):
    path, msg = _message(tmp_path, f"import sys\nsys.exit({code})\n")
    assert msg.startswith(f"{path}:3: the experiment file called sys.exit({code})"), msg


def test_run_reads_the_files_its_cells_replay_before_ray_starts(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from raybench.cli import main

    def refuse(address=None):
        raise AssertionError("Ray started: the missing file should have been refused before")

    monkeypatch.setattr("raybench.cluster.connect", refuse)
    missing = tmp_path / "nowhere.json"
    path = tmp_path / "exp.py"
    path.write_text(textwrap.dedent(f"""\
        from raybench.experiment import Experiment, Online, SimBackend

        experiment = Experiment(
            name="files", model="deepseek-ai/DeepSeek-R1",
            backends=(SimBackend(name="sim", timing="zero", gpu="H200", num_gpus=8),),
            online=(Online(concurrency=(2,), input_len=32, output_len=8, num_prompts=8, dataset="sharegpt",
                           dataset_path={str(missing)!r}),),
        )
        """))
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.count("\n") == 1 and str(missing) in result.output, result.output
    assert not (tmp_path / "runs").exists()

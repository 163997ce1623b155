"""env.json on local Ray (sources, plan, seeds, servers with versions and no secrets), and the hardware check live."""

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

import raybench
from raybench.cli import main
from raybench.experiment import Experiment, Online, SimBackend
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir

SECRET = "hf_do_not_leak_4711"


def test_env_json_records_what_ran_and_no_secret(ray_local, tmp_path):
    source = tmp_path / "exp.py"
    source.write_text("# an experiment file\n")
    backend = SimBackend(timing="zero", env={"HF_TOKEN": SECRET, "SIM_NOTE": "kept"})
    experiment = Experiment(name="meta", model="deepseek-ai/DeepSeek-R1", backends=(backend,), seed=3, repeats=2,
                            online=(Online(concurrency=(2,), input_len=16, output_len=4, num_prompts=4),))
    rd = RunDir.create(tmp_path, "meta")
    options = RunOptions(experiment_file=source,
                         invocation={"argv": ["raybench", "run", "exp.py", "--api-key", SECRET], "options": {"repeats": 2}})
    Runner(experiment, rd, options, report=lambda _: None).run()

    for path in rd.path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log"):
            assert SECRET not in path.read_text(), path
    env = json.loads(rd.env_json.read_text())
    assert env["raybench_version"] == raybench.__version__
    assert env["command"] == ["raybench", "run", "exp.py", "--api-key", "<redacted>"]
    assert env["options"] == {"repeats": 2}
    assert env["experiment"]["source"]["text"] == "# an experiment file\n"
    assert env["experiment"]["source"]["git"] is None  # tmp_path is in no git work tree
    assert (env["experiment"]["seed"], env["experiment"]["repeats"]) == (3, 2)
    assert env["seeds"] == {"sim-online-c2-i16-o4": 3, "sim-online-c2-i16-o4-rep2": 4}
    assert [c["id"] for c in env["plan"]] == ["sim-online-c2-i16-o4", "sim-online-c2-i16-o4-rep2"]
    server = env["servers"]["sim"]
    assert server["started"] is True and server["version"] == raybench.__version__
    assert server["env"] == {"HF_TOKEN": "<redacted>", "SIM_NOTE": "kept"}
    argv = server["argv"]
    assert argv[1:4] == ["-m", "raybench", "sim"] and argv[argv.index("--timing") + 1] == "zero"
    assert argv[argv.index("--port") + 1].isdigit()  # the port the server got, once it started
    # what the simulator makes of the launch, for `raybench calibrate --reference` on this run dir
    assert server["simulator"]["modes"]["online"]["engine"] == "generic"
    assert (server["simulator"]["model"], server["simulator"]["gpu"], server["simulator"]["num_gpus"]) == \
        ("deepseek-ai/DeepSeek-R1", "H200", 8)
    recorded = json.loads((rd.path / "servers" / "sim.json").read_text())
    assert recorded["argv"] == argv and recorded["version"] == raybench.__version__
    assert env["packages"]["ray"] and env["ray_nodes"] and env["gpus_by_node"]
    if env["raybench_git"] is not None:  # a source checkout (an installed wheel has none)
        assert len(env["raybench_git"]["commit"]) == 40


def test_missing_hardware_is_refused_on_the_live_cluster_before_anything_starts(ray_local, tmp_path):
    exp = tmp_path / "needs_h200.py"
    exp.write_text(textwrap.dedent("""\
        from raybench.experiment import Experiment, Hardware, Online, VLLMBackend
        experiment = Experiment(
            name="needs_h200", model="deepseek-ai/DeepSeek-R1",
            backends=(VLLMBackend(name="vllm-h200", tp=8),),
            hardware={"vllm-h200": Hardware(name="H200", count=8)},
            online=(Online(concurrency=(4,), input_len=16, output_len=4, num_prompts=4),),
        )
        """))
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", str(exp), "--out", str(out)])  # joins the session's cluster
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: hardware 'H200' of backend 'vllm-h200' needs a node whose GPUs Ray detects as 'H200', but the cluster "
        "has none (accelerator types: none; GPUs: 0). Run on H200 nodes, set Hardware(accelerator_type=...) to the "
        "type `ray status` shows, Hardware(resource=...) to place by a custom resource, or use --simulate")
    assert not out.exists()  # a refused run leaves no empty run directory


def test_only_the_selected_servers_hardware_is_checked(ray_local, tmp_path):
    deepseek = Path(__file__).resolve().parents[2] / "experiments" / "deepseek_r1.py"
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", str(deepseek), "--only", "backend=vllm,hardware=MI300X", "--out", str(out)])
    assert result.exit_code == 1, result.output
    # the first server this selection runs, not the experiment's first (sglang-h200)
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: hardware 'MI300X' of backend 'vllm-mi300x' needs a node whose GPUs Ray detects as "
        "'AMD-Instinct-MI300X-OAM', but the cluster has none")
    assert not out.exists()

"""SimConfig / FaultSpec validation and the `raybench sim` command's parsing."""

import dataclasses

import pytest
from click.testing import CliRunner

from raybench.sim import FaultKind, FaultSpec, SimConfig, SimConfigError
from raybench.sim.command import FaultParam, sim_command


def test_defaults_are_valid_and_frozen():
    config = SimConfig()
    assert (config.host, config.port, config.model, config.timing) == (
        "127.0.0.1", 0, "deepseek-ai/DeepSeek-R1", "zero")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("timing", "fast", "one of zero, fixed, engine"),
        ("port", 70000, "0..65535"),
        ("tokens_per_chunk", 0, "1..64"),
        ("gpu", "A100", "one of H200, H100, MI300X"),
        ("backend_profile", "tgi", "vllm"),
        ("ttft_ms", -1, "milliseconds"),
        ("max_num_seqs", 0, ">= 1"),
        ("kv_capacity_tokens", 1.5, ">= 1"),
        ("num_gpus", True, "integer"),
    ],
)
def test_errors_name_field_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(SimConfigError) as err:
        SimConfig(**{field: value})
    assert err.value.field == field
    assert f"{field}={value!r}" in str(err.value) and allowed in str(err.value)


def test_fault_spec_validation():
    assert FaultSpec(kind="drop", every=3, after_chunks=2).kind is FaultKind.DROP
    with pytest.raises(SimConfigError, match="fault.kind='boom'.*http_500"):
        FaultSpec(kind="boom")
    with pytest.raises(SimConfigError, match="fault.every=0"):
        FaultSpec(kind="drop", every=0)
    with pytest.raises(SimConfigError, match="after_chunks=3.*only drop, stall and malformed"):
        FaultSpec(kind="http_500", after_chunks=3)
    spec = FaultSpec(kind="http_429", every=3)
    assert [i for i in range(1, 10) if spec.hits(i)] == [3, 6, 9]


def test_fault_option_parsing():
    param = FaultParam()
    assert param.convert("drop:every=5:after=3", None, None) == FaultSpec(
        kind=FaultKind.DROP, every=5, after_chunks=3)
    assert param.convert("http_500", None, None) == FaultSpec(kind=FaultKind.HTTP_500)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--fault", "boom"], "--fault"),
        (["--fault", "drop:every=x"], "every must be an integer"),
        (["--fault", "drop:often=2"], "options are every=N and after=K"),
        (["--timing", "fast"], "--timing"),
        (["--gpu", "A100"], "--gpu"),
        (["--tokens-per-chunk", "0"], "--tokens-per-chunk"),
        (["--timing", "engine", "--gpu", "H100"], "--num-gpus"),
        (["--timing", "engine", "--model", "foo"], "--model"),
        # every DP-attention rank would get 4 // 8 = 0 prompt tokens a step and nothing would run
        (["--timing", "engine", "--backend-profile", "sglang", "--dp-attention", "8", "--max-num-batched-tokens", "4"],
         "--max-num-batched-tokens"),
    ],
)
def test_bad_options_give_one_line_errors_naming_the_option(args, needle):
    result = CliRunner().invoke(sim_command, args)
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and needle in error_lines[0]


def test_help_lists_every_option_with_examples():
    result = CliRunner().invoke(sim_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--model", "--timing", "--ttft-ms", "--itl-ms", "--tokens-per-chunk",
                   "--gpu", "--num-gpus", "--backend-profile", "--max-num-seqs", "--max-num-batched-tokens",
                   "--kv-capacity-tokens", "--seed", "--fault", "--ready-file"):
        assert option in result.output
    assert "raybench sim --fault http_500:every=10" in result.output

"""The time estimate ``raybench plan`` prints: what a run of the cells would cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from raybench.errors import ConfigError
from raybench.estimate import estimate_plan, format_duration
from raybench.experiment import (
    Experiment,
    ExternalBackend,
    Hardware,
    Offline,
    Online,
    SimBackend,
    VLLMBackend,
    load_experiment,
)
from raybench.plan import check_simulators

ROOT = Path(__file__).resolve().parents[2]
R1 = "deepseek-ai/DeepSeek-R1"
FIXED = SimBackend(name="fixed", timing="fixed", ttft_ms=200.0, itl_ms=20.0)


def _experiment(*backends, online=(), offline=(), model=R1, hardware=None) -> Experiment:
    return Experiment(name="t", model=model, backends=backends, online=online, offline=offline,
                      hardware=hardware or {})


def test_fixed_timing_is_rounds_of_ttft_plus_chunks():
    k4 = SimBackend(name="k4", timing="fixed", ttft_ms=200.0, itl_ms=20.0, tokens_per_chunk=4)
    experiment = _experiment(
        FIXED, k4,
        online=(
            # 10 requests, 4 slots: 3 rounds of 0.2 + 50 x 0.02 = 1.2 s
            Online(concurrency=(4,), input_len=100, output_len=51, num_prompts=10, only=("fixed",)),
            # one request every 0.5 s: the last leaves at 4.5 s and takes 1.2 s
            Online(concurrency=(10,), input_len=100, output_len=51, num_prompts=10, request_rate=2.0,
                   only=("fixed",)),
            # 17 tokens in chunks of 4: 5 chunks, 0.2 s then one every 4 x 20 ms: 0.52 s
            Online(concurrency=(8,), input_len=100, output_len=17, num_prompts=8, only=("k4",)),
        ),
    )
    estimate = estimate_plan(experiment, experiment.cells())
    # each cell also pays the 3 s per-cell overhead; each sim server 3 s to start
    assert estimate.cell_seconds("fixed-online-c4-i100-o51") == pytest.approx(6.6)
    assert estimate.cell_seconds("fixed-online-c10-i100-o51-r2") == pytest.approx(8.7)
    assert estimate.cell_seconds("k4-online-c8-i100-o17") == pytest.approx(3.52)
    assert dict(estimate.server_start_s) == {"fixed": 3.0, "k4": 3.0}
    assert estimate.total_s == pytest.approx(6.6 + 8.7 + 3.52 + 6.0)
    assert estimate.unknown_cells == 0


def test_zero_timing_is_the_client_read_rate_or_the_arrival_rate():
    zero = SimBackend(name="zero", timing="zero")
    experiment = _experiment(zero, online=(
        Online(concurrency=(100,), input_len=10, output_len=200, num_prompts=2000),  # 400k tokens at 200k/s
        Online(concurrency=(100,), input_len=10, output_len=2, num_prompts=50, request_rate=10.0),  # 50 at 10/s
    ))
    estimate = estimate_plan(experiment, experiment.cells())
    assert estimate.cell_seconds("zero-online-c100-i10-o200") == pytest.approx(2.0 + 3.0)
    assert estimate.cell_seconds("zero-online-c100-i10-o2-r10") == pytest.approx(5.0 + 3.0)


def test_done_cells_cost_nothing_and_a_finished_backend_starts_no_server():
    vllm = VLLMBackend(name="vllm", tp=8)
    experiment = _experiment(
        FIXED, vllm, hardware={"vllm": Hardware(name="H200")},
        online=(Online(concurrency=(4, 8), input_len=1000, output_len=100, num_prompts=64),),
        offline=(Offline(batch_sizes=(64,), input_len=1000, output_len=100),),
    )
    cells = experiment.cells()
    full = estimate_plan(experiment, cells)
    assert set(full.server_start_s) == {"fixed", "vllm"} and full.server_start_s["vllm"] >= 60
    assert set(full.engine_load_s) == {"vllm.H200-offline-engine-b64-i1000-o100"}

    served_vllm = {c.id for c in cells if c.backend == "vllm" and c.mode.value == "online"}
    partial = estimate_plan(experiment, cells, done=served_vllm)
    assert all(partial.cell_seconds(i) == 0.0 for i in served_vllm)
    # the engine cell is left: it loads its own engine, but no server starts for it
    assert set(partial.server_start_s) == {"fixed"}
    assert set(partial.engine_load_s) == set(full.engine_load_s)
    saved = sum(full.cell_seconds(i) for i in served_vllm) + full.server_start_s["vllm"]
    assert partial.total_s == pytest.approx(full.total_s - saved)

    everything = estimate_plan(experiment, cells, done={c.id for c in cells})
    assert everything.total_s == 0.0 and not everything.server_start_s and not everything.engine_load_s
    assert set(everything.cell_s) == {c.id for c in cells}


def test_external_server_cells_are_unknown_and_left_out_of_the_total():
    external = ExternalBackend(name="ext", url="http://10.0.0.1:8000")
    experiment = _experiment(FIXED, external, online=(Online(concurrency=(1, 2), input_len=10, output_len=11,
                                                              num_prompts=4),))
    estimate = estimate_plan(experiment, experiment.cells())
    assert estimate.cell_seconds("ext-online-c1-i10-o11") is None
    assert estimate.cell_seconds("ext-online-c2-i10-o11") is None
    assert estimate.unknown_cells == 2
    assert estimate.server_start_s["ext"] == 0.0  # already running
    known = [s for s in estimate.cell_s.values() if s is not None]
    assert len(known) == 2 and estimate.total_s == pytest.approx(sum(known) + 3.0)


def test_a_model_without_a_cost_profile_is_unknown_not_an_error():
    experiment = _experiment(FIXED, VLLMBackend(name="vllm"), model="my-org/unprofiled-7b",
                             online=(Online(concurrency=(2,), input_len=10, output_len=11, num_prompts=4),))
    estimate = estimate_plan(experiment, experiment.cells())
    assert estimate.cell_seconds("vllm-online-c2-i10-o11") is None
    assert estimate.cell_seconds("fixed-online-c2-i10-o11") is not None  # fixed timing needs no model
    assert estimate.unknown_cells == 1
    # a simulator in engine timing cannot serve such a model: `plan` and `run` refuse it (plan.check_simulators)
    engine = _experiment(SimBackend(name="engine", timing="engine"), model="my-org/unprofiled-7b",
                         online=(Online(concurrency=(2,), input_len=10, output_len=11, num_prompts=4),))
    assert estimate_plan(engine, engine.cells()).unknown_cells == 1
    with pytest.raises(ConfigError, match="model='my-org/unprofiled-7b' is not allowed: for engine timing"):
        check_simulators(engine)


def test_engine_timing_grows_with_output_and_shrinks_with_concurrency_up_to_the_engine_limits():
    # DeepSeek-R1 on 8 x H200, vLLM profile: the KV pool holds about 60 requests of 3200 + 800 tokens
    engine = SimBackend(name="r1", timing="engine", profile="vllm")
    concurrency = (1, 4, 16, 64, 128)
    experiment = _experiment(engine, online=(
        Online(concurrency=concurrency, input_len=3200, output_len=800, num_prompts=256),
        *(Online(concurrency=(16,), input_len=3200, output_len=out, num_prompts=256) for out in (200, 400)),
    ))
    estimate = estimate_plan(experiment, experiment.cells())
    by_c = [estimate.cell_seconds(f"r1-online-c{c}-i3200-o800") for c in concurrency]
    assert by_c[0] > 2.5 * by_c[1] > 2.5 * 2.5 * by_c[2]
    assert by_c[2] > 1.5 * by_c[3]
    # beyond the KV limit requests queue or are preempted: no gain (the seed: c128 took 2 % longer than c64)
    assert by_c[4] == pytest.approx(by_c[3], rel=0.1)
    by_out = [estimate.cell_seconds(f"r1-online-c16-i3200-o{o}") for o in (200, 400, 800)]
    assert by_out[0] < by_out[1] < by_out[2]
    # the running cap: 512 small requests never fill the KV, but only 256 run at once
    small = _experiment(engine, online=(Online(concurrency=(64, 256, 512), input_len=100, output_len=100,
                                               num_prompts=1024),))
    seqs = estimate_plan(small, small.cells())
    c64, c256, c512 = (seqs.cell_seconds(f"r1-online-c{c}-i100-o100") for c in (64, 256, 512))
    assert c64 > 1.5 * c256 and c512 == pytest.approx(c256, rel=0.02)


def test_a_long_cell_is_simulated_in_part_and_extended_at_its_steady_rate(monkeypatch):
    engine = SimBackend(name="r1", timing="engine", profile="vllm")
    experiment = _experiment(engine, online=(
        Online(concurrency=(16,), input_len=512, output_len=64, num_prompts=1200),
        Online(concurrency=(2000,), input_len=512, output_len=64, num_prompts=1200),
    ))
    whole = estimate_plan(experiment, experiment.cells())
    monkeypatch.setattr("raybench.estimate.LOOP_SAMPLE_REQUESTS", 400)  # c2000: 256 run, 4 x 256 simulated
    sampled = estimate_plan(experiment, experiment.cells())
    for cell in ("r1-online-c16-i512-o64", "r1-online-c2000-i512-o64"):
        assert sampled.cell_seconds(cell) == pytest.approx(whole.cell_seconds(cell), rel=0.03)
    # ten million requests, the most a cell takes, are estimated from the same sample
    big = _experiment(engine, online=(Online(concurrency=(16,), input_len=512, output_len=64, num_prompts=10**7),))
    per_request = (sampled.cell_seconds("r1-online-c16-i512-o64") - 3.0) / 1200
    assert big.cells()[0].num_prompts == 10**7
    assert estimate_plan(big, big.cells()).cell_seconds(big.cells()[0].id) == pytest.approx(10**7 * per_request,
                                                                                            rel=0.03)


def test_the_deepseek_r1_plan_is_estimated_whole():
    # how long it takes is benchmarks/sim_speed.py's to print: a timed test fails on a slower machine
    experiment = load_experiment(ROOT / "experiments" / "deepseek_r1.py")
    cells = experiment.cells()
    estimate = estimate_plan(experiment, cells)
    assert len(estimate.cell_s) == len(cells) == 117
    assert estimate.unknown_cells == 0 and all(s is not None and s > 0 for s in estimate.cell_s.values())
    assert len(estimate.server_start_s) == 6
    engine_cells = [c for c in cells if c.offline_method is not None and c.offline_method.value == "engine"]
    assert set(estimate.engine_load_s) == {c.id for c in engine_cells}
    # the seed's own runs took about 43 h of benchmark time (its results CSV): same order
    assert 10 * 3600 < estimate.total_s < 200 * 3600


def test_a_cell_of_a_backend_the_experiment_lacks_is_a_config_error():
    one = _experiment(FIXED, online=(Online(concurrency=(1,), input_len=1, output_len=1, num_prompts=1),))
    other = _experiment(SimBackend(name="other"), online=one.online)
    with pytest.raises(ConfigError, match="other"):
        estimate_plan(one, other.cells())


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (45, "45 s"), (59.4, "59 s"), (59.6, "1 min 00 s"), (283.3, "4 min 43 s"), (599.4, "9 min 59 s"),
    (599.6, "10 min"), (720, "12 min"), (749, "12 min"),
    (3569, "59 min"), (3599, "1 h 00 min"), (3 * 3600 + 5 * 60, "3 h 05 min"), (26 * 3600 + 40 * 60, "26 h 40 min"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_format_duration_rejects_what_is_not_a_duration(seconds):
    with pytest.raises(ValueError, match="seconds"):
        format_duration(seconds)

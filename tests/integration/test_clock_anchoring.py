"""Actors whose clocks read ±50 ms off the driver's still land on one timeline, within 1 ms.

Every process of this machine reads the same monotonic clock, so an actor's true offset is the
skew it was given, and the simulator's own log of when each request arrived and each first
token left is the truth to check the merged timeline against end to end. Two of three actors are made to read their clocks 50 ms ahead and behind (as actors
on other machines would); anchoring before the cell must put their rows back.
"""

import json

import polars as pl
import pytest
import ray

from raybench.experiment import Experiment, Online, SimBackend
from raybench.loadgen import pool as pool_module
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir

MODEL = "deepseek-ai/DeepSeek-R1"
SKEWS_NS = (50_000_000, -50_000_000, 0)


def skew_actors(monkeypatch, skews_ns, *, drift_ns=0):
    """Shift the actors' clocks as they start; ``drift_ns`` moves actor 0 again after the first poll."""
    place, poll = pool_module.LoadGenPool._place, pool_module.LoadGenPool._poll
    drifted = []

    def place_skewed(self, members, limit_s):
        members = place(self, members, limit_s)
        ray.get([m.handle.shift_clock.remote(s) for m, s in zip(members, skews_ns)])
        return members

    def poll_then_drift(self, cell, members, wait_s=0.0):
        poll(self, cell, members, wait_s)
        if drift_ns and not drifted:
            ray.get(members[0].handle.shift_clock.remote(skews_ns[0] + drift_ns))
            drifted.append(True)

    monkeypatch.setattr(pool_module.LoadGenPool, "_place", place_skewed)
    monkeypatch.setattr(pool_module.LoadGenPool, "_poll", poll_then_drift)


def run_cell(tmp_path, name, num_prompts, output_len):
    experiment = Experiment(
        name=name, model=MODEL, backends=(SimBackend(timing="fixed", ttft_ms=50, itl_ms=20),),
        online=(Online(concurrency=(6,), input_len=32, output_len=output_len, num_prompts=num_prompts),),
    )
    rd = RunDir.create(tmp_path, name)
    [summary] = Runner(experiment, rd, RunOptions(actors=3), report=lambda _: None).run()
    d = rd.cell_dir(summary["cell_id"])
    tables = {t: pl.read_parquet(d / f"{t}.parquet") for t in ("requests", "server_requests", "server_chunks")}
    return summary, json.loads((d / "summary.json").read_text()), tables


def test_skewed_actor_clocks_are_put_back_on_the_driver_timeline(ray_local, tmp_path, monkeypatch):
    skew_actors(monkeypatch, SKEWS_NS)
    summary, saved, t = run_cell(tmp_path, "skew", num_prompts=36, output_len=4)
    assert summary["completed"] == 36
    offsets = {a["name"][-1]: a for a in saved["actors"]}
    for i, skew in enumerate(SKEWS_NS):
        a = offsets[str(i)]
        # every process here reads one monotonic clock, so the true offset is the skew itself:
        # what is left of it is how far this actor's rows sit from the driver's timeline
        assert abs(a["clock_offset_ns"] - skew) < 1_000_000, a
        # anchored again after the cell: nothing moved, so the drift is within the anchors' error
        assert abs(a["clock_drift_ns"]) <= a["clock_drift_uncertainty_ns"] + 1_000_000
    assert saved["clock_drift_flagged"] is False
    # every send's lateness is measured and summarised
    assert saved["count_send_lateness"] == 36 and saved["max_send_lateness_ms"] >= saved["median_send_lateness_ms"] >= 0
    assert saved["sends_late"] is None  # all 36 due at once: a burst has no schedule to fall behind
    first_token = (
        t["server_chunks"].filter(pl.col("n_tokens") > 0).group_by("request_key").agg(pl.col("t_ns").min().alias("s_first"))
    )
    rows = (
        t["requests"].with_columns(request_key=pl.concat_str([pl.col("cell_id"), pl.lit("-"), pl.col("request_id").cast(pl.Utf8)]))
        .join(t["server_requests"], on="request_key").join(first_token, on="request_key")
    )
    assert rows.height == 36
    per_actor = rows.group_by("actor").agg(
        ((pl.col("t_arrival_ns") - pl.col("t_sent_ns")) / 1e6).median().alias("request_trip_ms"),
        ((pl.col("t_first_ns") - pl.col("s_first")) / 1e6).median().alias("response_trip_ms"),
    )
    print(per_actor)
    # end to end, each actor's sends and first tokens sit where the server saw them, a loopback
    # trip later (under 1 ms on a quiet machine, a few on a busy one, more where the machine
    # stalls during a wave; never before them by more than the anchor's error), where a clock
    # left 50 ms off would put them 50 ms away
    for trip in ("request_trip_ms", "response_trip_ms"):
        assert per_actor[trip].min() > -1.0, per_actor
        assert per_actor[trip].max() < 10.0, per_actor


def test_a_clock_that_moves_during_the_cell_is_recorded_and_flagged(ray_local, tmp_path, monkeypatch):
    skew_actors(monkeypatch, (0, 0, 0), drift_ns=20_000_000)
    _, saved, _ = run_cell(tmp_path, "drift", num_prompts=12, output_len=60)
    drifts = {a["name"][-1]: a["clock_drift_ns"] for a in saved["actors"]}
    assert abs(drifts["0"] - 20_000_000) < 2_000_000
    assert abs(drifts["1"]) < 2_000_000 and abs(drifts["2"]) < 2_000_000
    assert saved["clock_drift_max_ms"] == pytest.approx(20.0, abs=2.0)
    assert saved["clock_drift_flagged"] is True

"""What a server that waited too long for room is told to do: advice for what is short."""

import pytest

from raybench.backends import server_actor


@pytest.mark.parametrize(("want", "free", "says", "not_says"), [
    ({"GPU": 8.0}, {"GPU": 0.0, "CPU": 16.0}, ["(GPU short)", "Free those GPUs"], ["CPUs", "not on one node"]),
    ({"CPU": 8.0}, {"CPU": 2.0, "GPU": 8.0}, ["(CPU short)", "Free CPUs or lower placement num_cpus"], ["GPUs"]),
    ({"GPU": 8.0, "h200-pool": 8.0}, {"GPU": 8.0}, ["(h200-pool short)", "Free h200-pool or give placement="],
     ["GPUs"]),
    ({"GPU": 8.0}, {"GPU": 16.0}, ["free, but not on one node", "runtime_env"], ["short", "holds them"]),
])
def test_the_advice_names_what_is_short(monkeypatch, want, free, says, not_says):
    monkeypatch.setattr(server_actor.ray, "available_resources", lambda: free)
    advice = server_actor._what_to_do(want)
    assert all(s in advice for s in says), advice
    assert not any(s in advice for s in not_says), advice

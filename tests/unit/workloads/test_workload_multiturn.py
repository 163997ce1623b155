"""Multi-turn sessions: each turn re-sends the conversation so far; sessions stay whole on one actor."""

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.loadgen.arrivals import ArrivalProcess, cell_schedule, split_workload
from raybench.loadgen.generator import session_chains
from raybench.workloads import MultiTurnWorkload, SessionWorkload, prompt_text


def test_every_turn_contains_the_previous_turns_verbatim():
    workload = MultiTurnWorkload(num_sessions=64, num_turns=4, input_len=20, output_len=7, turn_input_len=5)
    specs = workload.build(range(workload.num_requests))
    for spec in specs:
        session, turn = divmod(spec.request_id, 4)
        assert (spec.session, spec.turn) == (session, turn)
        assert spec.prompt_tokens == 20 + turn * (7 + 5) == workload.prompt_len(turn)
        if turn:
            previous = specs[spec.request_id - 1]
            # the previous prompt, then the previous answer (output_len ids), then the new message
            assert np.array_equal(spec.prompt_token_ids[: previous.prompt_tokens], previous.prompt_token_ids)
            assert prompt_text(spec).startswith(prompt_text(previous) + " ")
    # different sessions are different conversations
    assert not np.array_equal(specs[0].prompt_token_ids, specs[4].prompt_token_ids)


def test_a_turn_built_alone_equals_the_turn_built_with_its_session():
    workload = MultiTurnWorkload(num_sessions=5, num_turns=3, input_len=8, output_len=4, seed=3)
    together = workload.build(range(15))
    assert [workload.build([i])[0] for i in (14, 7, 0)] == [together[14], together[7], together[0]]


@pytest.mark.parametrize("actors", [1, 2, 3, 16])
def test_sessions_go_to_actors_whole_and_are_the_same_for_any_actor_count(actors):
    workload = MultiTurnWorkload(num_sessions=64, num_turns=4, input_len=8, output_len=4)
    assert isinstance(workload, SessionWorkload)
    whole = {s.request_id: s for s in workload.build(range(256))}
    shards = split_workload(workload, actors)
    assert sorted(i for shard in shards for i in shard) == list(range(256))
    for ids in shards:
        assert {i // 4 for i in ids} == {i // 4 for i in ids if i % 4 == 0}  # no session split
        assert workload.build(ids) == [whole[i] for i in ids]


def test_sessions_are_released_by_the_arrival_process_and_later_turns_follow_their_answers():
    workload = MultiTurnWorkload(num_sessions=6, num_turns=3, input_len=8, output_len=4, think_time_s=0.5)
    offsets = cell_schedule(workload, ArrivalProcess(rate_per_s=2.0, burstiness=float("inf")))
    np.testing.assert_allclose(offsets, np.repeat([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], 3))
    specs = workload.build(range(18))
    assert [s.think_time_s for s in specs[:3]] == [0.0, 0.5, 0.5]
    starts, following = session_chains(specs)
    assert starts == [0, 3, 6, 9, 12, 15]
    assert following[:4] == [1, 2, -1, 4]


def test_plain_requests_need_no_chains():
    from raybench.workloads import RandomWorkload

    specs = RandomWorkload(num_prompts=4, input_len=3, output_len=2).build(range(4))
    assert session_chains(specs) == ([0, 1, 2, 3], None)


@pytest.mark.parametrize("field, value", [("num_turns", 0), ("think_time_s", -1.0), ("num_sessions", 1.5)])
def test_bad_settings_are_refused(field, value):
    params = {"num_sessions": 2, "num_turns": 2, "input_len": 4, "output_len": 2, field: value}
    with pytest.raises(ConfigError, match=field):
        MultiTurnWorkload(**params)


def test_chat_text_of_a_turn_starts_with_the_previous_turns_text():
    from raybench.workloads.tokenizer import WORD_TOKENIZER

    workload = MultiTurnWorkload(num_sessions=2, num_turns=3, input_len=6, output_len=3, tokenizer=WORD_TOKENIZER,
                                 text=True)
    specs = workload.build(range(6))
    for previous, spec in zip(specs, specs[1:]):
        if spec.turn:
            assert spec.prompt_text.startswith(previous.prompt_text + " ")
        assert spec.prompt_tokens == len(spec.prompt_text.split())  # as the simulator counts


def test_the_plan_estimate_leaves_sessions_and_files_unknown():
    from raybench.estimate import estimate_plan
    from raybench.experiment import Experiment, Online, SimBackend

    experiment = Experiment(name="e", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(),), online=(
        Online(dataset="multiturn", num_prompts=4, num_turns=2, concurrency=(2,), input_len=8, output_len=4),
        Online(concurrency=(2,), input_len=8, output_len=4, num_prompts=4)))
    estimate = estimate_plan(experiment, experiment.cells())
    assert estimate.unknown_cells == 1


def test_segments_share_keys_exactly_where_a_session_s_turns_share_ids():
    workload = MultiTurnWorkload(num_sessions=2, num_turns=3, input_len=100, output_len=20, turn_input_len=30)
    specs = workload.build(range(6))
    segs = [workload.segments(i) for i in range(6)]
    assert [sum(t for _, t in s) for s in segs] == [s.prompt_tokens for s in specs] == [100, 150, 200] * 2
    for a, b in ((0, 1), (1, 2), (0, 2), (0, 3), (2, 5)):
        shared_ids = next((k for k in range(min(specs[a].prompt_tokens, specs[b].prompt_tokens))
                           if specs[a].prompt_token_ids[k] != specs[b].prompt_token_ids[k]), None)
        shared_keys = [k for k, _ in segs[a]][:len(segs[b])] == [k for k, _ in segs[b]][:len(segs[a])]
        # turns of one session: the earlier prompt is the later one's start, keys and ids alike
        assert (shared_ids is None) == shared_keys
    other = MultiTurnWorkload(num_sessions=2, num_turns=3, input_len=100, output_len=20, turn_input_len=30, seed=1)
    assert other.segments(0)[0][0] != segs[0][0][0]

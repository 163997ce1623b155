"""SharedPrefixWorkload: counts, exact lengths, prefixes shared within groups only, order."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.workloads import SharedPrefixWorkload, prompt_text

SEED_BENCHMARK = {
    "num_groups": 10,
    "prompts_per_group": 50,
    "prefix_len": 2000,
    "question_len": 1200,
    "output_len": 800,
}


@pytest.fixture(scope="module")
def seed_specs():
    workload = SharedPrefixWorkload(**SEED_BENCHMARK, seed=1)
    return workload, workload.build(range(workload.num_requests))


def test_seed_benchmark_counts_and_lengths(seed_specs) -> None:
    workload, specs = seed_specs
    assert workload.num_requests == 500
    assert len(specs) == 500
    assert Counter(s.group for s in specs) == {g: 50 for g in range(10)}
    for spec in specs:
        assert spec.prompt_tokens == spec.prompt_token_ids.size == 3200
        assert spec.max_tokens == 800


def test_prefix_shared_exactly_within_a_group_and_not_across(seed_specs) -> None:
    _, specs = seed_specs
    prefixes: dict[int, np.ndarray] = {}
    for spec in specs:
        prefix = spec.prompt_token_ids[:2000]
        if spec.group in prefixes:
            assert np.array_equal(prefix, prefixes[spec.group])
        else:
            prefixes[spec.group] = prefix
    groups = sorted(prefixes)
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            # Different groups share no leading token run: they differ at the first id or soon.
            diverge = int(np.argmax(prefixes[a] != prefixes[b]))
            assert not np.array_equal(prefixes[a], prefixes[b])
            assert diverge < 5
    # Questions are distinct from each other.
    questions = {s.prompt_token_ids[2000:].tobytes() for s in specs}
    assert len(questions) == 500


def test_requests_are_shuffled_across_groups(seed_specs) -> None:
    _, specs = seed_specs
    order = [s.group for s in specs]
    assert order != sorted(order)
    # Interleaved: the first 50 requests touch most groups, not one.
    assert len(set(order[:50])) >= 8


@pytest.mark.parametrize("num_actors", [1, 4, 7])
def test_same_index_same_prompt_whatever_the_sharding(num_actors: int) -> None:
    workload = SharedPrefixWorkload(
        num_groups=3, prompts_per_group=5, prefix_len=20, question_len=7, output_len=4, seed=9
    )
    whole = workload.build(range(15))
    by_id = {
        s.request_id: s
        for k in range(num_actors)
        for s in workload.build(list(range(k, 15, num_actors)))
    }
    assert [by_id[i] for i in range(15)] == whole
    assert workload.build([14, 3]) == [whole[14], whole[3]]


def test_seed_changes_prefixes_questions_and_order() -> None:
    params = {**SEED_BENCHMARK, "prefix_len": 16, "question_len": 8}
    a = SharedPrefixWorkload(**params, seed=1).build(range(500))
    b = SharedPrefixWorkload(**params, seed=2).build(range(500))
    assert [s.group for s in a] != [s.group for s in b]
    assert {s.prompt_token_ids[:16].tobytes() for s in a}.isdisjoint(
        {s.prompt_token_ids[:16].tobytes() for s in b}
    )
    assert SharedPrefixWorkload(**params, seed=1).build(range(500)) == a


def test_text_form_shares_the_prefix_words(seed_specs) -> None:
    _, specs = seed_specs
    same_group = [s for s in specs if s.group == 0][:2]
    first, second = (prompt_text(s).split() for s in same_group)
    assert len(first) == len(second) == 3200
    assert first[:2000] == second[:2000]
    assert first[2000:] != second[2000:]


def test_describe_is_json_safe() -> None:
    described = json.loads(json.dumps(SharedPrefixWorkload(**SEED_BENCHMARK).describe()))
    assert described["name"] == "prefix"
    assert described["num_requests"] == 500
    assert described["prompt_len"] == 3200


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_groups", 0, "prefix.num_groups=0 is not allowed: an integer >= 1"),
        ("prompts_per_group", -1, "prefix.prompts_per_group=-1 is not allowed: an integer >= 1"),
        ("prefix_len", 0, "prefix.prefix_len=0 is not allowed: an integer >= 1"),
        ("question_len", 1.5, "prefix.question_len=1.5 is not allowed: an integer >= 1"),
        ("output_len", True, "prefix.output_len=True is not allowed: an integer >= 1"),
        ("seed", -2, "prefix.seed=-2 is not allowed: an integer >= 0"),
        ("token_id_high", 10, "prefix.token_id_high=10 is not allowed: an integer above token_id_low (1000)"),
    ],
)
def test_bad_values_name_field_value_and_rule(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SharedPrefixWorkload(**{**SEED_BENCHMARK, field: value})
    assert message in str(caught.value)


def test_building_an_index_out_of_range_fails() -> None:
    workload = SharedPrefixWorkload(**SEED_BENCHMARK)
    with pytest.raises(ConfigError, match=r"request_id=500 is not allowed: an index in \[0, 500\)"):
        workload.build([500])

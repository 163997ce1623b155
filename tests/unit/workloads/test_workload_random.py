"""RandomWorkload: exact and ranged lengths, id range, determinism per index, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raybench.errors import ConfigError
from raybench.workloads import RandomWorkload, RequestSpec, Workload, prompt_text


def test_range_ratio_zero_gives_exact_lengths() -> None:
    workload = RandomWorkload(num_prompts=200, input_len=1000, output_len=800, seed=3)
    specs = workload.build(range(200))
    assert [s.request_id for s in specs] == list(range(200))
    for spec in specs:
        assert spec.prompt_tokens == 1000
        assert spec.prompt_token_ids.shape == (1000,)
        assert spec.prompt_token_ids.dtype == np.int32
        assert spec.max_tokens == 800
        assert spec.group is None


def test_range_ratio_half_stays_in_bounds_and_covers_them() -> None:
    # vLLM's semantics: L=1000, r=0.5 -> [500, 1500]; O=10 -> [5, 15].
    workload = RandomWorkload(num_prompts=4000, input_len=1000, output_len=10, range_ratio=0.5)
    specs = workload.build(range(4000))
    inputs = np.array([s.prompt_tokens for s in specs])
    outputs = np.array([s.max_tokens for s in specs])
    assert inputs.min() >= 500 and inputs.max() <= 1500
    assert outputs.min() >= 5 and outputs.max() <= 15
    # Uniform over the range: both ends are reached and the mean sits in the middle.
    assert inputs.min() < 510 and inputs.max() > 1490
    assert set(outputs.tolist()) == set(range(5, 16))
    assert abs(inputs.mean() - 1000) < 15
    assert all(s.prompt_token_ids.size == s.prompt_tokens for s in specs)


def test_lengths_never_fall_below_one_token() -> None:
    workload = RandomWorkload(num_prompts=500, input_len=1, output_len=1, range_ratio=0.9)
    specs = workload.build(range(500))
    assert {s.prompt_tokens for s in specs} == {1, 2}
    assert {s.max_tokens for s in specs} == {1, 2}


def test_ids_stay_inside_the_vocab_range() -> None:
    workload = RandomWorkload(
        num_prompts=50, input_len=2000, output_len=1, token_id_low=5000, token_id_high=5010
    )
    ids = np.concatenate([s.prompt_token_ids for s in workload.build(range(50))])
    assert ids.min() == 5000 and ids.max() == 5009
    default = RandomWorkload(num_prompts=50, input_len=2000, output_len=1)
    ids = np.concatenate([s.prompt_token_ids for s in default.build(range(50))])
    assert ids.min() >= 1000 and ids.max() < 100_000


@pytest.mark.parametrize("num_actors", [1, 2, 3, 7])
def test_same_index_same_prompt_whatever_the_sharding(num_actors: int) -> None:
    workload = RandomWorkload(num_prompts=100, input_len=64, output_len=16, range_ratio=0.3, seed=11)
    whole = workload.build(range(100))
    shards = [list(range(k, 100, num_actors)) for k in range(num_actors)]
    by_id = {s.request_id: s for shard in shards for s in workload.build(shard)}
    assert [by_id[i] for i in range(100)] == whole
    # Contiguous shards too, and a shard built in reverse order.
    assert workload.build(range(0, 40)) + workload.build(range(40, 100)) == whole
    assert workload.build([99, 50, 0]) == [whole[99], whole[50], whole[0]]


def test_seed_changes_content_and_same_seed_repeats_it() -> None:
    a = RandomWorkload(num_prompts=10, input_len=100, output_len=8, range_ratio=0.5, seed=1)
    b = RandomWorkload(num_prompts=10, input_len=100, output_len=8, range_ratio=0.5, seed=2)
    again = RandomWorkload(num_prompts=10, input_len=100, output_len=8, range_ratio=0.5, seed=1)
    assert a.build(range(10)) == again.build(range(10))
    for x, y in zip(a.build(range(10)), b.build(range(10))):
        assert not np.array_equal(x.prompt_token_ids, y.prompt_token_ids)
    # Requests within one workload differ from each other.
    first, second = a.build([0, 1])
    assert not np.array_equal(first.prompt_token_ids, second.prompt_token_ids)


def test_specs_are_read_only_and_hashable() -> None:
    (spec,) = RandomWorkload(num_prompts=1, input_len=8, output_len=2).build([0])
    with pytest.raises(ValueError):
        spec.prompt_token_ids[0] = 7
    assert len({spec, spec}) == 1


def test_prompt_text_has_one_word_per_token() -> None:
    (spec,) = RandomWorkload(num_prompts=1, input_len=1234, output_len=2).build([0])
    text = prompt_text(spec)
    words = text.split()
    assert len(words) == spec.prompt_tokens == 1234
    assert words[0] == f"w{spec.prompt_token_ids[0]}"


def test_describe_is_json_safe_and_resolved() -> None:
    workload = RandomWorkload(num_prompts=np.int64(5), input_len=100, output_len=10, range_ratio=0.5)
    assert isinstance(workload, Workload)
    described = json.loads(json.dumps(workload.describe()))
    assert described["name"] == "random"
    assert described["num_requests"] == 5
    assert described["input_len_range"] == [50, 150]
    assert described["output_len_range"] == [5, 15]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"input_len": 0}, "random.input_len=0 is not allowed: an integer >= 1"),
        ({"output_len": -3}, "random.output_len=-3 is not allowed: an integer >= 1"),
        ({"num_prompts": 0}, "random.num_prompts=0 is not allowed: an integer >= 1"),
        ({"input_len": 2.5}, "random.input_len=2.5 is not allowed: an integer >= 1"),
        ({"range_ratio": 1.0}, "random.range_ratio=1.0 is not allowed: a number with 0 <= value < 1"),
        ({"range_ratio": -0.1}, "random.range_ratio=-0.1 is not allowed"),
        ({"range_ratio": float("nan")}, "random.range_ratio=nan is not allowed"),
        ({"seed": -1}, "random.seed=-1 is not allowed: an integer >= 0"),
        ({"token_id_low": -1}, "random.token_id_low=-1 is not allowed: an integer >= 0"),
        (
            {"token_id_low": 500, "token_id_high": 500},
            "random.token_id_high=500 is not allowed: an integer above token_id_low (500)",
        ),
        ({"token_id_high": 2**31 + 1}, "at most 2147483648 (int32 ids)"),
    ],
)
def test_bad_values_name_field_value_and_rule(params: dict, message: str) -> None:
    base = {"num_prompts": 4, "input_len": 10, "output_len": 5}
    with pytest.raises(ConfigError) as caught:
        RandomWorkload(**{**base, **params})
    assert message in str(caught.value)


def test_building_an_index_out_of_range_fails_before_building() -> None:
    workload = RandomWorkload(num_prompts=4, input_len=10, output_len=5)
    with pytest.raises(ConfigError, match=r"request_id=4 is not allowed: an index in \[0, 4\)"):
        workload.build([0, 4])
    with pytest.raises(ConfigError, match="request_id=-1"):
        workload.build([-1])


def test_request_spec_rejects_inconsistent_records() -> None:
    ids = np.arange(4, dtype=np.int32)
    with pytest.raises(ConfigError, match=r"prompt_tokens=5 is not allowed: the number of prompt ids \(4\)"):
        RequestSpec(request_id=0, prompt_token_ids=ids, prompt_tokens=5, max_tokens=1)
    with pytest.raises(ConfigError, match="1-D int32 array"):
        RequestSpec(request_id=0, prompt_token_ids=ids.astype(np.int64), prompt_tokens=4, max_tokens=1)
    with pytest.raises(ConfigError, match="max_tokens=0"):
        RequestSpec(request_id=0, prompt_token_ids=ids, prompt_tokens=4, max_tokens=0)
    # The caller's array stays writeable; only the spec's view is frozen.
    RequestSpec(request_id=0, prompt_token_ids=ids, prompt_tokens=4, max_tokens=1)
    assert ids.flags.writeable

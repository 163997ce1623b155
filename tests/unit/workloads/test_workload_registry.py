"""make_workload: names, parameters, and errors that point at the fix."""

from __future__ import annotations

import pytest

from raybench.errors import ConfigError
from raybench.workloads import RandomWorkload, SharedPrefixWorkload, make_workload


def test_builds_each_registered_workload() -> None:
    random_workload = make_workload("random", num_prompts=3, input_len=10, output_len=2, seed=4)
    assert random_workload == RandomWorkload(num_prompts=3, input_len=10, output_len=2, seed=4)
    prefix = make_workload(
        "prefix", num_groups=2, prompts_per_group=3, prefix_len=4, question_len=5, output_len=6
    )
    assert isinstance(prefix, SharedPrefixWorkload)
    assert prefix.num_requests == 6


def test_unknown_name_lists_names_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        make_workload("randm", num_prompts=1)
    message = str(caught.value)
    assert "unknown workload 'randm'" in message
    assert "available: multiturn, prefix, random" in message
    assert "Did you mean 'random'?" in message


def test_unknown_parameter_lists_allowed_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        make_workload("random", num_prompts=1, input_len=1, output_len=1, rangeratio=0.2)
    message = str(caught.value)
    assert "unknown parameter 'rangeratio' for workload 'random'" in message
    assert "range_ratio" in message and "Did you mean 'range_ratio'?" in message


def test_missing_parameters_are_named() -> None:
    with pytest.raises(ConfigError, match="workload 'prefix' needs prompts_per_group, output_len"):
        make_workload("prefix", num_groups=2, prefix_len=4, question_len=5)


def test_bad_values_pass_through_the_class_validation() -> None:
    with pytest.raises(ConfigError, match="random.input_len=0 is not allowed"):
        make_workload("random", num_prompts=1, input_len=0, output_len=1)

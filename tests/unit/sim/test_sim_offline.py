"""The offline engine: one generate() call in virtual time."""

import numpy as np
import pytest

from raybench.sim import OfflineEngine, SimConfig, SimConfigError


def _engine(**overrides) -> OfflineEngine:
    return OfflineEngine(SimConfig(timing="engine", **overrides))


def test_elapsed_grows_with_batch_and_output_length():
    engine = _engine()
    small = engine.generate([3200] * 32, 200).elapsed_s
    bigger_batch = engine.generate([3200] * 128, 200).elapsed_s
    longer_output = engine.generate([3200] * 32, 800).elapsed_s
    assert bigger_batch > small * 1.5
    assert longer_output > small * 2
    # but batching pays: 4x the work in well under 4x the time
    assert bigger_batch < 4 * small


def test_counts_per_request_in_input_order_and_token_id_prompts():
    result = _engine().generate([np.arange(10), [1, 2, 3], 7], [5, 1, 3])
    assert result.prompt_tokens == [10, 3, 7]
    assert result.output_tokens == [5, 1, 3]
    assert result.total_output_tokens == 9 and result.total_prompt_tokens == 20
    for r in result.requests:
        assert 0 < r.first_token_s <= r.finish_s <= result.elapsed_s
    assert max(r.finish_s for r in result.requests) == result.elapsed_s


def test_throughput_lands_in_the_range_of_the_published_h200_rows():
    # dstack H200 offline rows at batch 256, input 3200, output 800: total 3,000-6,300 tokens/s.
    # With the fitted profiles (vLLM H200 measured 4,381 tokens/s at batch 256) within 25 %.
    result = _engine().generate([3200] * 256, 800)
    total_tps = (result.total_prompt_tokens + result.total_output_tokens) / result.elapsed_s
    assert 4381 * 0.75 < total_tps < 4381 * 1.25


def test_mtp_makes_decode_bound_runs_faster():
    plain = _engine().generate([100] * 8, 400).elapsed_s
    mtp = _engine(tokens_per_chunk=2).generate([100] * 8, 400).elapsed_s
    # half the steps; each reads the weights of the experts twice as many tokens touch
    assert mtp < 0.65 * plain


def test_bad_inputs_name_the_argument():
    with pytest.raises(SimConfigError, match="max_tokens"):
        _engine().generate([10, 10], [5])
    with pytest.raises(SimConfigError, match=r"prompts\[1\]=0"):
        _engine().generate([10, 0], 5)
    with pytest.raises(SimConfigError, match="KV capacity"):
        _engine(kv_capacity_tokens=100).generate([90], 20)

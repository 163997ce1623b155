"""Statistics of a repeated list without the list: the per-token ITL of long chunks."""

from __future__ import annotations

import numpy as np
import pytest

from raybench.analysis.stats import describe, describe_repeated

PCTS = (0.0, 1.0, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0)


@pytest.mark.parametrize("seed, size, most", [(0, 1, 1), (1, 2, 3), (2, 7, 1), (3, 200, 40), (4, 5000, 800)])
def test_describe_repeated_is_describe_of_the_repeated_list(seed, size, most):
    rng = np.random.default_rng(seed)
    # ties and a zero count, as a cell's chunks have them: equal gaps, and chunks of no token
    values = np.round(rng.gamma(2.0, 10.0, size), 1)
    counts = rng.integers(0, most + 1, size)
    counts[0] = max(counts[0], 1)
    want = describe(np.repeat(values, counts), PCTS)
    got = describe_repeated(values, counts, PCTS)
    assert got.count == want.count and got.max == want.max and got.median == want.median
    # the same order statistics in np.percentile's own arithmetic: equal, not close
    assert got.percentiles == want.percentiles
    assert got.mean == pytest.approx(want.mean, rel=1e-12) and got.std == pytest.approx(want.std, rel=1e-9, abs=1e-12)


def test_describe_repeated_of_nothing_is_no_figure():
    for values, counts in (([], []), ([3.0, 4.0], [0, 0])):
        stats = describe_repeated(values, counts, (50.0, 99.0))
        assert stats.count == 0 and stats.mean is None and stats.percentiles == {50.0: None, 99.0: None}

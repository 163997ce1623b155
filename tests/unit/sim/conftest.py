import pytest

from raybench.sim import costmodel


@pytest.fixture
def summed_features():
    """Run an EngineCore until idle and sum its step features: step by step, or fast-forwarding
    pure-decode spans where it can (the two must agree)."""

    def run(core, *, fast: bool) -> tuple[float, ...]:
        total = [0.0] * len(costmodel.FEATURES)
        while core.has_work():
            span = core.fast_forward_decode() if fast else None
            feats = span.features if span is not None else core.step().features
            total = [a + b for a, b in zip(total, feats)]
        return tuple(total)

    return run

from raybench.loadgen.clock import estimate_anchor


def test_anchor_takes_the_sample_with_the_shortest_round_trip():
    # driver clock ticks; the remote clock is driver + 1_000_000 ns, read at varying delays
    driver = iter([0, 100, 1000, 1010, 5000, 5400])
    remote = iter([1_000_000 + 60, 1_000_000 + 1004, 1_000_000 + 5300])
    anchor = estimate_anchor(lambda: next(remote), samples=3, clock_ns=lambda: next(driver))
    assert anchor.rtt_ns == 10
    assert anchor.offset_ns == 1_000_000 - 1  # midpoint 1005, remote read 1004
    assert anchor.to_driver(1_000_500) == 501
    assert anchor.to_actor(501) == 1_000_500

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


def test_anchors_of_many_clocks_are_estimated_at_once_and_keep_their_order():
    import threading
    import time

    from raybench.loadgen.clock import ClockAnchor, estimate_anchors

    threads = set()

    def reader(skew_ns):
        def read():
            threads.add(threading.get_ident())
            time.sleep(0.005)  # a round trip: serial anchoring of 8 clocks x 16 samples would take 640 ms
            return time.perf_counter_ns() + skew_ns
        return read

    def broken():
        raise RuntimeError("actor died")

    skews = [0, 50_000_000, -50_000_000, 7, 1_000, 2_000, 3_000, 4_000]
    t0 = time.perf_counter()
    anchors = estimate_anchors([reader(s) for s in skews] + [broken])
    elapsed_s = time.perf_counter() - t0
    assert len(threads) > 1
    assert elapsed_s < 0.4  # in parallel ~85 ms (16 samples x 5 ms); 0.4 s leaves room for a stalled machine
    assert isinstance(anchors[-1], RuntimeError)
    for skew, anchor in zip(skews, anchors[:-1]):
        assert isinstance(anchor, ClockAnchor)
        assert abs(anchor.offset_ns - skew) <= anchor.rtt_ns // 2 + 1_000_000


def test_drift_is_the_move_of_the_offset_and_is_flagged_beyond_its_error():
    from raybench.loadgen.clock import ClockAnchor, ClockDrift

    before = ClockAnchor(offset_ns=50_000_000, rtt_ns=200_000)
    steady = ClockDrift(before=before, after=ClockAnchor(offset_ns=50_300_000, rtt_ns=400_000))
    assert steady.drift_ns == 300_000 and steady.uncertainty_ns == 300_000 and not steady.flagged
    moved = ClockDrift(before=before, after=ClockAnchor(offset_ns=52_000_000, rtt_ns=200_000))
    assert moved.drift_ns == 2_000_000 and moved.flagged
    back = ClockDrift(before=before, after=ClockAnchor(offset_ns=48_000_000, rtt_ns=200_000))
    assert back.flagged
    # a slow round trip widens the error bound: the same move is then not flagged
    noisy = ClockDrift(before=before, after=ClockAnchor(offset_ns=52_000_000, rtt_ns=3_000_000))
    assert not noisy.flagged
    lost = ClockDrift(before=before, after=None)
    assert lost.drift_ns is None and not lost.flagged

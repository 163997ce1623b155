"""The ground-truth log: runs of events expand into one row per event."""

from array import array

from raybench.sim.groundtruth import EventKind, EventTable, GroundTruthLog, SimStatus


def test_runs_expand_into_rows_and_reset_clears():
    log = GroundTruthLog()
    kinds = [EventKind.TOKEN, EventKind.TOKEN, EventKind.USAGE, EventKind.DONE]
    table = EventTable(array("h", [1, 2, 0, 0]), array("b", kinds))
    a, b = log.new_request("cell-1"), log.new_request("cell-2")
    src = log.source(table)
    assert log.source(table) == src
    log.events(a, 0, 100, src, 0, 1)
    log.events(b, 0, 150, src, 0, 4)
    log.events(a, 1, 200, src, 1, 3)
    log.request_done(a, t_arrival_ns=50, t_end_ns=200, prompt_tokens=7, output_tokens=3, max_tokens=3,
                     status=SimStatus.OK, http_status=200)
    log.request_done(b, t_arrival_ns=60, t_end_ns=150, prompt_tokens=7, output_tokens=3, max_tokens=3,
                     status=SimStatus.DISCONNECTED, http_status=200, fault="drop")
    chunks = log.chunks_table().to_pydict()
    assert chunks["request_key"] == ["cell-1", "cell-2", "cell-2", "cell-2", "cell-2", "cell-1", "cell-1", "cell-1"]
    assert chunks["seq"] == [0, 0, 1, 2, 3, 1, 2, 3]
    assert chunks["t_ns"] == [100, 150, 150, 150, 150, 200, 200, 200]
    assert chunks["n_tokens"] == [1, 1, 2, 0, 0, 2, 0, 0]
    assert chunks["kind"] == ["token", "token", "token", "usage", "done", "token", "usage", "done"]
    requests = log.requests_table().to_pydict()
    assert requests["status"] == ["ok", "disconnected"] and requests["fault"] == [None, "drop"]
    log.reset()
    assert log.chunks_table().num_rows == 0 and log.requests_table().num_rows == 0

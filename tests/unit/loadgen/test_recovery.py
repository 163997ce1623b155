"""What a lost load generator leaves: rows for its in-flight requests, the rest for a replacement."""

import numpy as np
import pyarrow as pa

from raybench.loadgen.recovery import arrival_order, leftover, lost_rows
from raybench.workloads import RandomWorkload


def test_the_driver_knows_the_order_an_actor_sends_its_shard():
    # the generator sorts its shard by arrival, stably: the driver must agree on who went first
    assert arrival_order([4, 9, 14, 19], np.array([0.3, 0.1, 0.3, 0.0])) == (19, 9, 4, 14)
    assert arrival_order([1, 5, 9], np.zeros(3)) == (1, 5, 9)


def test_taken_requests_without_a_row_were_in_flight_the_rest_were_never_sent():
    rest = leftover((0, 4, 8, 12, 16, 20), sent=4, recorded={0, 8})
    assert rest.in_flight == (4, 12)
    assert rest.unsent == (16, 20)
    # a row recorded after the last snapshot's count (the count lags the rows) is never resent
    assert leftover((0, 4, 8), sent=1, recorded={0, 4}).unsent == (8,)


def test_in_flight_requests_of_a_lost_actor_become_disconnected_rows():
    workload = RandomWorkload(num_prompts=8, input_len=16, output_len=4)
    batch = lost_rows(cell_id="c", actor="raybench:c:1", node="n1", workload=workload, request_ids=(4, 6),
                      t_scheduled_ns=(100, 200), t_lost_ns=5_000, why="its process died: ActorDiedError")
    rows = pa.Table.from_batches([batch]).to_pylist()
    assert [(r["request_id"], r["status"], r["prompt_tokens"], r["max_tokens"]) for r in rows] == [
        (4, "disconnected", 16, 4), (6, "disconnected", 16, 4)]
    assert [(r["t_sent_ns"], r["t_done_ns"], r["t_first_ns"]) for r in rows] == [(100, 5000, None), (200, 5000, None)]
    assert "raybench:c:1 was lost mid-request (its process died" in rows[0]["error"]

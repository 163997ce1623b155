"""A cell is complete only when every planned request has one row; rows are durable as they arrive."""

import json

import pyarrow as pa
import pytest

from raybench.loadgen.records import RequestColumns, requests_batch
from raybench.store.cells import CellWriter, read_cell, read_parts, set_aside
from raybench.store.outcome import CellOutcome, OutcomeKind, judge, outcome_of
from raybench.store.rundir import RunDir
from raybench.store.schema import CHUNKS_SCHEMA


def _requests(ids, cell="c"):
    cols = RequestColumns()
    for i in ids:
        for name, value in (("request_id", i), ("prompt_tokens", 4), ("server_prompt_tokens", None),
                            ("max_tokens", 2), ("output_tokens", 2), ("cached_tokens", None),
                            ("t_scheduled_ns", 0), ("t_sent_ns", 1), ("t_first_ns", 2), ("t_done_ns", 3),
                            ("status", 0), ("http_status", 200), ("error", None), ("attempts", 1)):
            getattr(cols, name).append(value)
    return requests_batch(cols, cell, "a", "n", 0)


def _chunks(ids, cell="c"):
    n = len(ids)
    return pa.RecordBatch.from_pydict(
        {"cell_id": [cell] * n, "request_id": pa.array(ids, pa.uint64()), "seq": pa.array([0] * n, pa.int32()),
         "t_ns": pa.array([2] * n, pa.int64()), "n_tokens": pa.array([2] * n, pa.int16()),
         "kind": pa.array(["token"] * n).dictionary_encode().cast(CHUNKS_SCHEMA.field("kind").type)},
        schema=CHUNKS_SCHEMA)


def test_complete_means_one_row_per_planned_request():
    assert judge(range(4), [3, 1, 0, 2]).kind is OutcomeKind.COMPLETE
    lost = judge(range(32), range(12), why_missing="load generators lost and not replaced: raybench:c:1")
    assert (lost.kind, lost.recorded_requests, lost.missing_requests) == (OutcomeKind.INCOMPLETE, 12, 20)
    assert lost.reason == "20 planned requests have no row: load generators lost and not replaced: raybench:c:1"
    assert judge(range(3), [0, 1, 1, 2]).reason == "1 duplicate rows"
    assert judge(range(3), [0, 1, 2, 7]).kind is OutcomeKind.INCOMPLETE
    assert judge(range(3), []).kind is OutcomeKind.FAILED


def test_an_outcome_round_trips_through_the_summary_and_needs_a_reason():
    o = judge(range(32), range(12))
    assert outcome_of(o.fields()) == o
    with pytest.raises(ValueError, match="reason"):
        CellOutcome(kind="incomplete", planned_requests=2, recorded_requests=1)
    with pytest.raises(ValueError, match="outcome='done' is not allowed: complete, incomplete, failed"):
        outcome_of({"outcome": "done"})


def test_summaries_from_before_outcomes_are_judged_by_what_they_recorded():
    # the case: 12 rows of 32, summary.json written, so resume skipped it
    old = {"num_prompts": 12, "requests_not_recorded": 20, "lost_actors": 1}
    assert outcome_of(old).kind is OutcomeKind.INCOMPLETE
    assert outcome_of({"num_prompts": 32, "requests_not_recorded": 0, "lost_actors": 0}).complete


def test_rows_are_on_disk_after_each_flush_and_merge_on_close(tmp_path):
    writer = CellWriter(tmp_path)
    writer.write_chunks(_chunks([0, 1]))
    writer.write_requests(_requests([0, 1]))
    writer.flush()
    writer.write_requests(_requests([2]))
    writer.write_chunks(_chunks([2]))
    writer.flush()
    # a driver killed here leaves whole parts, and nothing that looks like a finished cell
    requests, chunks = read_parts(tmp_path)
    assert sorted(requests["request_id"].to_list()) == [0, 1, 2] and chunks.height == 3
    assert not (tmp_path / "requests.parquet").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    writer.close()
    requests, chunks = read_cell(tmp_path)
    assert requests["request_id"].to_list() == [0, 1, 2] and chunks.height == 3
    assert read_parts(tmp_path) is None and writer.request_ids == [0, 1, 2]


def test_a_resume_sets_an_earlier_attempt_aside_whole(tmp_path):
    writer = CellWriter(tmp_path)
    writer.write_requests(_requests([0]))
    writer.abort()
    (tmp_path / "server_chunks.parquet").write_text("x")
    moved = set_aside(tmp_path)
    assert moved == tmp_path / "attempts" / "1"
    assert sorted(p.name for p in moved.iterdir()) == ["parts", "server_chunks.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["attempts"]
    assert set_aside(tmp_path) is None


def test_the_run_dir_knows_each_cells_outcome_and_resumes_only_complete_ones(tmp_path):
    rd = RunDir.create(tmp_path, "x")
    rd.plan_json.write_text(json.dumps({"cells": [{"id": "stopped", "num_prompts": 8}]}))
    for cell, outcome in (("done", judge(range(4), range(4))), ("lost", judge(range(32), range(12), why_missing="x"))):
        rd.cell_dir(cell).mkdir(parents=True)
        (rd.cell_dir(cell) / "summary.json").write_text(json.dumps({"cell": {"id": cell}, **outcome.fields()}))
    writer = CellWriter(rd.cell_dir("stopped"))
    writer.write_requests(_requests([0, 1, 2], cell="stopped"))
    writer.flush()  # then the driver was killed: no summary
    outcomes = {name: o for name, (o, _) in rd.cell_outcomes().items()}
    assert {n: o.kind.value for n, o in outcomes.items()} == {"done": "complete", "lost": "incomplete",
                                                              "stopped": "incomplete"}
    assert (outcomes["stopped"].recorded_requests, outcomes["stopped"].planned_requests) == (3, 8)
    assert list(rd.completed_cells()) == ["done"] and rd.cell_ids() == ["done"]

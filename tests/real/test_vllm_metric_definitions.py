"""raybench's ``--compat vllm`` figures against vLLM's own ``calculate_metrics``, on the same requests.

The same synthetic requests go (a) into raybench's tables and ``summarize_cell(compat="vllm")`` and
(b) into ``RequestFuncOutput`` records, built as vLLM's request functions build them, and through
``vllm.benchmarks.serve.calculate_metrics`` of the installed vLLM (one subprocess in its venv). So the
definitions are checked against vLLM's code, not against a reading of it.

The translation of raybench's events into a ``RequestFuncOutput`` follows
``vllm/benchmarks/lib/endpoint_request_func.py`` (0.32.0, ``async_request_openai_completions`` and
``..._chat_completions``, which agree on all of it): every event with a non-empty ``choices`` list takes a
timestamp; the first sets ``ttft``, each later one appends a gap to ``itl`` and moves ``latency``, empty
text included; an event with empty ``choices`` and a ``usage`` sets ``output_tokens`` and, where it has
one, ``prompt_len``; ``[DONE]`` is skipped. vLLM re-encodes ``generated_text`` where ``output_tokens`` is
missing or 0, so those requests' texts here encode to exactly the tokens their events carried (what
raybench counts instead, having no text).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import vllm_env
from real_vllm import VLLM_ENV

from raybench.analysis import request_metrics, summarize_cell
from raybench.store.schema import CHUNKS_SCHEMA, REQUESTS_SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CELL = "cell-vllm-defs"
BASE_NS = 7_000_000_000_000  # an arbitrary clock base: nothing may pass by reading absolute times
PERCENTILES = (50, 90, 95, 99, 99.9)
# R2's TTFT and R1's E2E sit exactly on their SLO (both tools keep a request whose metric equals it);
# R6 misses the TTFT SLO, R7 only the TPOT one, R8 only the E2E one
GOODPUT_SLOS_MS = {"ttft": 50.0, "tpot": 150.0, "e2el": 900.0}
# vLLM's figures that raybench reports under the same names with its own definitions, in every mode
# (docs/metrics.md, "Per cell"): tokens per event in fixed 1 s bins from the first successful start, and
# successful requests per 1 s bucket they touch (vLLM 0.32.0), against each event's n_tokens in bins that
# tile the duration, and an exact sweep of every request (raybench). Here: 36 vs 43.75 tok/s, 7 vs 9.
OWN_DEFINITIONS = ("max_output_tokens_per_s", "max_concurrent_requests")


@dataclass(frozen=True)
class Event:
    t_ms: float
    kind: str  # raybench's ChunkKind: token | empty | usage | done
    n_tokens: int = 0
    text: str = ""


def tok(t_ms: float, n: int = 1, text: str = "ba") -> Event:
    return Event(t_ms, "token", n, text)


def empty(t_ms: float, n: int = 0) -> Event:
    return Event(t_ms, "empty", n)


@dataclass(frozen=True)
class Req:
    request_id: int
    sent_ms: float
    done_ms: float
    events: list[Event]
    status: str = "ok"
    prompt_tokens: int = 10  # what the workload built (vLLM's dataset prompt_len)
    usage: tuple[int, int | None] | None = None  # (completion_tokens, prompt_tokens) of the usage event
    max_tokens: int = 32
    extra: dict = field(default_factory=dict)


def closing(t_ms: float) -> list[Event]:
    """The stream's end: the include_usage event, then [DONE]."""
    return [Event(t_ms, "usage"), Event(t_ms + 1, "done")]


def _long_stream(sent_ms: float) -> list[Event]:
    """Gaps from 0.25 ms to 377 ms, so the mean, std and every percentile hang on the interpolation;
    one event carries 3 tokens (speculative decoding) and one an empty text."""
    gaps = [0.5, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 0.25, 2.5, 7.75, 12, 60]
    t = sent_ms + 30
    events = [tok(t)]
    for i, gap in enumerate(gaps):
        t += gap
        events.append(tok(t, 3) if i == 7 else empty(t) if i == 12 else tok(t))
    return events


CASES = [
    # completions: one token per event, then a finish-only event with empty text (vLLM times it)
    Req(0, 0, 320, [tok(41.5), tok(43), tok(47.25), tok(290), tok(291.125), tok(300), empty(301), *closing(302)],
        usage=(6, 12)),
    # chat: a role-only first event (vLLM's TTFT), a 3-token event, an empty-text event carrying a
    # special token; E2E exactly on the SLO
    Req(1, 5, 1010, [empty(20), tok(60, 3), empty(100, 1), tok(110, 2), tok(905), *closing(906)],
        prompt_tokens=20, usage=(7, 25)),
    # one output token: no TPOT (but TPOT 0 for goodput); TTFT exactly on the SLO
    Req(2, 10, 80, [tok(60), empty(61), *closing(62)], usage=(1, 10)),
    # one output token in a single event: no ITL at all
    Req(3, 12, 200, [tok(50), *closing(151)], usage=(1, 10)),
    # failures: out of every list and count, inside the duration
    Req(4, 15, 17, [], status="http_error", extra={"http_status": 503, "error": "Service Unavailable"}),
    Req(5, 20, 140, [tok(70), tok(75), tok(130)], status="disconnected", extra={"error": "stream cut"}),
    # no usage at all: vLLM re-encodes "ba ba." (3 tokens), raybench counts the 3 text events;
    # the prompt is the workload's
    Req(6, 25, 400, [tok(80, text="ba"), tok(81, text=" ba"), tok(350, text="."), empty(351), Event(352, "done")]),
    # usage of 0 output tokens: both treat it as missing ("kalo" encodes to 2 tokens, as 2 events)
    Req(7, 30, 300, [tok(75, text="ka"), tok(250, text="lo"), *closing(251)], prompt_tokens=28, usage=(0, 30)),
    Req(8, 40, 1500, [*_long_stream(40), empty(1140), *closing(1141)], prompt_tokens=64, usage=(22, 64)),
    # the last to end, and failed: the duration runs to it
    Req(9, 50, 1600, [tok(500)], status="timeout", extra={"error": "no byte for 60 s"}),
]


def ns(ms: float) -> int:
    return BASE_NS + round(ms * 1_000_000)


def raybench_tables(cases: list[Req]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The requests and chunks tables, through the real Arrow schema (as read back from Parquet)."""
    requests = [{
        "cell_id": CELL, "request_id": r.request_id, "actor": "a0", "node": "n0",
        "prompt_tokens": r.prompt_tokens, "server_prompt_tokens": r.usage[1] if r.usage else None,
        "max_tokens": r.max_tokens, "output_tokens": r.usage[0] if r.usage else None, "cached_tokens": None,
        "t_scheduled_ns": ns(r.sent_ms), "t_sent_ns": ns(r.sent_ms),
        "t_first_ns": next((ns(e.t_ms) for e in r.events if e.n_tokens), None), "t_done_ns": ns(r.done_ms),
        "status": r.status, "http_status": r.extra.get("http_status"), "error": r.extra.get("error"),
        "attempts": 1, "send_lateness_ns": 0, "session": None, "turn": None,
    } for r in cases]
    chunks = [{"cell_id": CELL, "request_id": r.request_id, "seq": seq, "t_ns": ns(e.t_ms), "n_tokens": e.n_tokens,
               "kind": e.kind} for r in cases for seq, e in enumerate(r.events)]
    return (pl.from_arrow(pa.Table.from_pylist(requests, schema=REQUESTS_SCHEMA)),
            pl.from_arrow(pa.Table.from_pylist(chunks, schema=CHUNKS_SCHEMA)))


def as_request_func_output(r: Req) -> dict:
    """What vLLM's request function records for this stream (module docstring), times in s from the same ns."""
    sent = ns(r.sent_ms)
    out = {"success": r.status == "ok", "prompt_len": r.prompt_tokens, "start_time": (sent - BASE_NS) / 1e9,
           "ttft": 0.0, "itl": [], "latency": 0.0, "output_tokens": 0, "generated_text": "",
           "error": r.extra.get("error", "")}
    if not out["success"]:
        return out  # a failed request adds only to ``failed`` (its partial fields are never read)
    last = None
    for e in r.events:
        if e.kind in ("token", "empty"):  # ``if choices := data.get("choices")``
            if last is None:
                out["ttft"] = (ns(e.t_ms) - sent) / 1e9
            else:
                out["itl"].append((ns(e.t_ms) - last) / 1e9)
            last = ns(e.t_ms)
            out["generated_text"] += e.text
        elif e.kind == "usage" and r.usage is not None:  # ``elif usage := data.get("usage")``
            out["output_tokens"] = r.usage[0]
            if r.usage[1] is not None:
                out["prompt_len"] = r.usage[1]
    out["latency"] = (last - sent) / 1e9
    return out


# Runs in the vLLM venv: JSON job on stdin, vLLM's BenchmarkMetrics and per-request output lengths to a file
# (calculate_metrics prints to stdout).
VLLM_SCRIPT = r"""
import dataclasses, json, sys
from vllm.benchmarks.datasets import SampleRequest
from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
from vllm.benchmarks.serve import calculate_metrics
from vllm.tokenizers import get_tokenizer

job = json.load(sys.stdin)
metrics, output_lens = calculate_metrics(
    input_requests=[SampleRequest(prompt="", prompt_len=n, expected_output_len=m) for n, m in job["inputs"]],
    outputs=[RequestFuncOutput(**o) for o in job["outputs"]],
    dur_s=job["dur_s"],
    tokenizer=get_tokenizer(job["tokenizer"]),
    selected_percentiles=job["percentiles"],
    goodput_config_dict=job["goodput"],
)
with open(job["out"], "w") as f:
    json.dump({"metrics": dataclasses.asdict(metrics), "output_lens": [int(n) for n in output_lens]}, f)
"""


def save_result_names(metrics: dict) -> dict:
    """vLLM's BenchmarkMetrics under the names ``vllm bench serve --save-result`` writes (serve.py's
    ``result`` dict and ``process_one_metric``); raybench's summary uses those names."""
    out = {
        "completed": metrics["completed"], "failed": metrics["failed"],
        "total_input_tokens": metrics["total_input"], "total_output_tokens": metrics["total_output"],
        **{k: metrics[k] for k in ("request_throughput", "request_goodput", "output_throughput",
                                   "total_token_throughput", *OWN_DEFINITIONS)},
    }
    for m in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std"):
            out[f"{stat}_{m}_ms"] = metrics[f"{stat}_{m}_ms"]
        for p, value in metrics[f"percentiles_{m}_ms"]:
            out[f"p{int(p) if int(p) == p else p}_{m}_ms"] = value
    return out


@pytest.fixture(scope="module")
def tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    return raybench_tables(CASES)


@pytest.fixture(scope="module")
def ours(tables) -> dict:
    requests, chunks = tables
    return summarize_cell(requests, chunks, compat="vllm", goodput_slos_ms=GOODPUT_SLOS_MS, percentiles=PERCENTILES)


@pytest.fixture(scope="module")
def theirs(vllm_venv: Path, tiny_model: Path, ours: dict, tmp_path_factory) -> dict:
    """vLLM's calculate_metrics on the same requests, over raybench's duration (how long a run took is
    each tool's own clock; what is computed from it is the subject here)."""
    out = tmp_path_factory.mktemp("vllm-metrics") / "metrics.json"
    job = {"inputs": [(r.prompt_tokens, r.max_tokens) for r in CASES],
           "outputs": [as_request_func_output(r) for r in CASES], "dur_s": ours["duration"],
           "tokenizer": str(tiny_model), "percentiles": list(PERCENTILES), "goodput": GOODPUT_SLOS_MS,
           "out": str(out)}
    proc = subprocess.run([str(vllm_env.venv_python()), "-c", VLLM_SCRIPT], input=json.dumps(job), text=True,
                          capture_output=True, timeout=300, check=False, env=dict(os.environ, **VLLM_ENV))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_figure_vllm_computes_agrees(ours, theirs):
    expected = save_result_names(theirs["metrics"])
    shared = {k: v for k, v in expected.items() if k not in OWN_DEFINITIONS}
    # every one of vLLM's figures is compared: none may drop out by a name raybench lacks
    assert set(shared) <= set(ours), sorted(set(shared) - set(ours))
    assert len(shared) == 8 + 4 * (3 + len(PERCENTILES))
    wrong = {k: (ours[k], v) for k, v in shared.items() if ours[k] != pytest.approx(v, rel=1e-9, abs=1e-12)}
    assert not wrong, "\n".join(f"{k}: raybench {a!r}, vLLM {b!r}" for k, (a, b) in wrong.items())


def test_the_cases_reach_the_edges_they_are_for(tables, ours, theirs):
    """The figures above agree on requests that exercise each rule, not on a degenerate set: under
    raybench's own rules the same requests give other TTFT, ITL, E2E and token figures."""
    assert (ours["completed"], ours["failed"]) == (7, 3)
    assert ours["count_tpot"] == 5  # R2 and R3 had one output token
    assert ours["goodput_completed"] == 4  # R0, R3, and R1 and R2 on the SLO
    assert ours["output_tokens_fallback_requests"] == 2  # R6 (no usage) and R7 (usage 0)
    assert ours["count_itl"] == 6 + 4 + 1 + 0 + 3 + 1 + 21
    own = summarize_cell(*tables, compat="raybench", goodput_slos_ms=GOODPUT_SLOS_MS, percentiles=PERCENTILES)
    vllm = save_result_names(theirs["metrics"])
    for key in ("mean_ttft_ms", "count_itl", "mean_e2el_ms", "total_input_tokens", "total_output_tokens"):
        assert own[key] != pytest.approx(ours[key]), key
    assert own["mean_ttft_ms"] != pytest.approx(vllm["mean_ttft_ms"])


def test_per_request_output_tokens_agree(tables, theirs):
    """vLLM's per-request output lengths (0 for a failure), usage, re-encoded text and fallbacks included."""
    per = request_metrics(*tables, compat="vllm").sort("request_id")
    ours = [n if ok else 0 for n, ok in zip(per["output_tokens_used"], per["ok"])]
    assert ours == theirs["output_lens"] == [6, 7, 1, 1, 0, 0, 3, 2, 22, 0]


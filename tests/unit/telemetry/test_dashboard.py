"""dashboards/raybench.json: every PromQL expression names metrics that raybench, Ray or a backend exports."""

import json
import re
from pathlib import Path

from raybench.telemetry import catalog
from raybench.telemetry.server_metrics import BACKEND_METRICS

DASHBOARD = Path(__file__).parents[3] / "dashboards" / "raybench.json"

#: Ray's own series the dashboard uses: names as in Ray 2.60's
#: ray/dashboard/modules/metrics/dashboards/default_dashboard_panels.py (and seen live in
#: tests/cluster/test_telemetry.py, with Component="ray::_LoadGenActor..." and Name="_LoadGenActor")
RAY_SYSTEM_METRICS = {"ray_actors", "ray_component_cpu_percentage"}
#: labels Ray adds to every application series
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "instance", "job"}

_FUNCTIONS = {"sum", "avg", "max", "min", "count", "rate", "increase", "irate", "histogram_quantile",
              "clamp_min", "label_replace", "topk", "quantile", "delta", "deriv", "abs"}
_MODIFIERS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _MODIFIERS | {"bool", "offset", "and", "or", "unless"}
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\}|\[[^\]]*\]|[A-Za-z_:][A-Za-z0-9_:]*|\d+(?:\.\d+)?|\S')
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')


def parse(expr: str) -> tuple[list[tuple[str, set[str]]], set[str], set[str]]:
    """(metric names with the labels they match on, labels in by/on clauses, functions called)."""
    tokens = _TOKEN.findall(expr)
    metrics, grouping, functions = [], set(), set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _MODIFIERS and nxt == "(":
            j = tokens.index(")", i)
            grouping |= {t for t in tokens[i + 2:j] if t != ","}
            i = j + 1
            continue
        if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", tok) and tok not in _KEYWORDS:
            if nxt == "(" or nxt in ("by", "without"):  # a call, or an aggregation before its clause
                functions.add(tok)
            else:
                labels = {m.group(1) for m in _MATCHER.finditer(nxt)} if nxt.startswith("{") else set()
                metrics.append((tok, labels))
        i += 1
    return metrics, grouping, functions


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def expressions(dashboard):
    for p in panels(dashboard["panels"]):
        for target in p.get("targets", []):
            yield p["title"], target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":  # label_values(selector, label): the selector grouped by the label
            selector, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"]).groups()
            yield f"variable {var['name']}", f"count by ({label}) ({selector})"


def test_the_tokenizer_separates_metrics_labels_and_functions():
    metrics, grouping, functions = parse(
        'histogram_quantile(0.9, sum by (cell, le) (rate(ray_raybench_ttft_ms_bucket{cell=~"$cell",x!="a}b"}'
        "[$__rate_interval]))) / on (cell) group_left sum(vllm:num_requests_running)"
    )
    assert metrics == [("ray_raybench_ttft_ms_bucket", {"cell", "x"}), ("vllm:num_requests_running", set())]
    assert grouping == {"cell", "le"} and functions == {"histogram_quantile", "sum", "rate"}


def test_every_expression_uses_exported_metrics_and_their_labels():
    dashboard = json.loads(DASHBOARD.read_text())
    specs = {m.exported_name: m for m in catalog.METRICS}
    backend = {name for names in BACKEND_METRICS.values() for name in names}
    known = set(specs) | RAY_SYSTEM_METRICS | backend
    used = set()
    exprs = list(expressions(dashboard))
    assert len(exprs) >= 20
    for where, expr in exprs:
        metrics, grouping, functions = parse(expr)
        assert metrics, f"{where}: no metric in {expr!r}"
        assert functions <= _FUNCTIONS, f"{where}: unknown function in {expr!r}"
        allowed = set(RAY_LABELS)
        for name, labels in metrics:
            assert name in known, f"{where}: {name} is exported by neither raybench, Ray nor a backend"
            used.add(name)
            if name in specs:
                assert labels <= set(specs[name].tag_keys) | RAY_LABELS, f"{where}: {name} has no label {labels}"
                allowed |= set(specs[name].tag_keys)
            else:
                allowed |= {"Name", "State", "Component", "model_name", "engine"}
        assert grouping <= allowed, f"{where}: grouping by {grouping - allowed} in {expr!r}"
    # what the issue asks to see: throughput, TTFT/ITL, in flight, errors, server KV and queue
    assert {"ray_raybench_output_tokens_total", "ray_raybench_ttft_ms_bucket", "ray_raybench_itl_ms_bucket",
            "ray_raybench_requests_in_flight", "ray_raybench_requests_total", "ray_raybench_server_kv_cache_usage",
            "ray_raybench_server_requests_waiting", "ray_raybench_server_requests_running"} <= used


def test_the_dashboard_imports_into_rays_grafana():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "experiment", "cell"} <= variables
    all_panels = list(panels(dashboard["panels"]))
    assert len({p["id"] for p in all_panels}) == len(all_panels)
    for p in all_panels:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            for target in p["targets"]:
                assert set(re.findall(r"\$(\w+)", target["expr"])) <= variables | {"__rate_interval"}, p["title"]

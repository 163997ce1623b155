"""The self-contained HTML page: tables, metadata and Vega-Lite charts with the libraries inlined.

Vega, Vega-Lite and Vega-Embed come from vl-convert's bundle and are written into the page, so
a report copied off a cluster opens on a laptop with no network. Specs go in one JSON script
element; a small script embeds each into its div and records on ``<body>`` how many rendered
(``data-charts-rendered`` / ``data-charts-expected``), which is what the browser test reads.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from raybench.store.rundir import write_bytes_atomic

log = logging.getLogger(__name__)


def _cache_dir() -> Path | None:
    """``$RAYBENCH_CACHE``, else ``$XDG_CACHE_HOME/raybench``, else ``~/.cache/raybench``; None
    where none is set and the user has no home directory."""
    explicit = os.environ.get("RAYBENCH_CACHE")
    if explicit:
        return Path(explicit)
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "raybench"
    try:
        return Path.home() / ".cache" / "raybench"
    except (RuntimeError, KeyError):
        return None


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + Vega-Embed as one script (about 0.9 MB).

    vl-convert takes over a second to build it, as long as the rest of a small report takes: it
    is kept on disk per vl-convert version (the bundle depends on nothing else), and per process.
    """
    import vl_convert

    def build() -> str:  # "</script" escaped, so it cannot end the page's script element
        return vl_convert.javascript_bundle().replace("</script", "<\\/script")

    folder = _cache_dir()
    if folder is None:
        return build()
    path = folder / f"vega-bundle-{vl_convert.__version__}.js"
    try:
        cached = path.read_text(encoding="utf-8")
        if cached:
            return cached
    except (OSError, UnicodeDecodeError):
        pass
    bundle = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a reader, or a second report written at once, sees all of it or none
        write_bytes_atomic(path, bundle.encode("utf-8"))
    except OSError as err:  # a read-only or full disk costs the rebuild next time, nothing more
        log.debug("cannot keep the Vega bundle in %s: %s", path.parent, err)
    return bundle


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


@dataclass(frozen=True, kw_only=True)
class ChartBlock:
    """A chart in the page: its spec, the div id it renders into, and what to write around it."""

    id: str
    spec: dict[str, Any]
    caption: str = ""  # HTML


@dataclass(frozen=True, kw_only=True)
class Section:
    id: str
    title: str
    body: str = ""  # HTML, before the charts
    charts: Sequence[ChartBlock] = ()
    groups: Sequence[tuple[str, str, Sequence[ChartBlock]]] = ()  # (heading, html before, charts)
    embedded: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # div id -> spec, divs in body


@dataclass(frozen=True, kw_only=True)
class Page:
    title: str
    subtitle: str = ""
    sections: Sequence[Section] = field(default_factory=tuple)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;
 background:#fafafa}
header{background:#1f2937;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#cbd5e1}nav{padding:8px 28px;background:#e5e7eb;position:sticky;top:0;z-index:2}
nav a{margin-right:16px;color:#1f2937;text-decoration:none;font-weight:600}
main{padding:8px 28px 40px}section{margin-top:26px}h2{border-bottom:2px solid #d1d5db;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;background:#fff}th,td{border:1px solid #e5e7eb;padding:3px 7px;
 text-align:right;white-space:nowrap}th{background:#f3f4f6}
td.t,th.t{text-align:left}.wide{overflow-x:auto;max-width:100%}
figure{display:inline-block;vertical-align:top;margin:10px 18px 18px 0;background:#fff;padding:10px;
 border:1px solid #e5e7eb;border-radius:6px}figcaption{font-size:12px;color:#555;margin-top:4px}
.skipped{color:#6b7280;font-size:13px}.flag{font-size:13px;margin:2px 0}.flag.error{color:#b91c1c}
.flag.warning{color:#b45309}.flag.ok{color:#047857}details{background:#fff;border:1px solid #e5e7eb;
 border-radius:6px;margin:8px 0;padding:6px 10px}summary{cursor:pointer;font-weight:600}
pre{background:#f3f4f6;padding:8px;overflow-x:auto;font-size:12px;max-height:420px}
.badge{display:inline-block;border-radius:8px;padding:0 7px;margin-left:8px;font-size:11px;color:#fff}
.badge.error{background:#b91c1c}.badge.warning{background:#b45309}.badge.ok{background:#047857}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:13px}dl.meta dt{font-weight:600}
dl.meta dd{margin:0}
"""

_RENDER = """
(function () {
  var specs = JSON.parse(document.getElementById("raybench-specs").textContent);
  var ids = Object.keys(specs);
  document.body.dataset.chartsExpected = String(ids.length);
  var jobs = ids.map(function (id) {
    return vegaEmbed(document.getElementById(id), specs[id], {renderer: "svg", actions: false})
      .then(function () { return 1; }, function (err) { console.error("chart " + id + " failed: " + err); return 0; });
  });
  Promise.all(jobs).then(function (done) {
    document.body.dataset.chartsRendered = String(done.reduce(function (a, b) { return a + b; }, 0));
  });
})();
"""


def _script_json(obj: Any) -> str:
    # "<" escaped so no string in a spec can close the script element
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def figure(block: ChartBlock) -> str:
    caption = f"<figcaption>{block.caption}</figcaption>" if block.caption else ""
    return f'<figure><div class="chart" id="{esc(block.id)}"></div>{caption}</figure>'


def render_page(page: Page) -> str:
    """The whole document as one string."""
    specs: dict[str, Any] = {}
    nav, body = [], []
    for section in page.sections:
        nav.append(f'<a href="#{esc(section.id)}">{esc(section.title)}</a>')
        parts = [f'<section id="{esc(section.id)}"><h2>{esc(section.title)}</h2>', section.body]
        specs.update(section.embedded)
        for block in section.charts:
            specs[block.id] = block.spec
            parts.append(figure(block))
        for heading, before, blocks in section.groups:
            parts.append(heading)
            parts.append(before)
            for block in blocks:
                specs[block.id] = block.spec
                parts.append(figure(block))
        parts.append("</section>")
        body.append("\n".join(parts))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(page.title)}</title><style>{_CSS}</style>",
        f'<script type="text/javascript">{vega_bundle()}</script>',
        "</head><body>",
        f"<header><h1>{esc(page.title)}</h1><p>{esc(page.subtitle)}</p></header>",
        f"<nav>{''.join(nav)}</nav><main>",
        *body,
        "</main>",
        f'<script type="application/json" id="raybench-specs">{_script_json(specs)}</script>',
        f'<script type="text/javascript">{_RENDER}</script>',
        "</body></html>",
    ])


def html_table(
    frame: pl.DataFrame, columns: Mapping[str, tuple[str, str]], *, text: Sequence[str] = (), raw: Sequence[str] = ()
) -> str:
    """``frame`` as a table; ``columns`` maps column -> (header, format spec such as ',.1f').

    ``text`` columns are left-aligned; ``raw`` columns hold HTML of our own (flag badges) and
    are not escaped.
    """
    head = "".join(
        f'<th class="{"t" if name in text else ""}">{esc(title)}</th>' for name, (title, _) in columns.items()
    )
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for name, (_, fmt) in columns.items():
            value = row.get(name)
            shown = "" if value is None else (format(value, fmt) if fmt and isinstance(value, (int, float)) else value)
            cls = ' class="t"' if name in text else ""
            cells.append(f"<td{cls}>{shown if name in raw else esc(shown)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def definition_list(items: Mapping[str, Any]) -> str:
    return '<dl class="meta">' + "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items.items() if v not in (None, "", [], {})
    ) + "</dl>"


def json_details(title: str, obj: Any) -> str:
    text = json.dumps(obj, indent=2, default=str)
    return f"<details><summary>{esc(title)}</summary><pre>{esc(text)}</pre></details>"

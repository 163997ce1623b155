"""One colour and one marker per series, the same in every chart of a report.

The seed's charts give each hardware a family of hues (MI300X reds, H200 greens) and each
backend a shade inside it (vLLM dark, TensorRT-LLM mid, SGLang light); raybench keeps that, so a
reader of the seed recognises its series, and adds families for other hardware. A series
without hardware, and any series past the first with the same hardware × backend (a second run
in a comparison), takes the next colour of a palette with neither reds nor greens.

Markers follow the backend, so a line keeps its shape when its colour is hard to tell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import altair as alt
import polars as pl

from raybench.report.frame import as_report_frame

# (dark, mid, light) per hardware family; the keys are matched case-insensitively as prefixes
_FAMILIES = (
    ("MI3", ("#e00000", "#c0392b", "#f4868a")),  # MI300X, MI325X: the seed's reds
    ("H200", ("#4e7d32", "#70ad47", "#a9d18e")),  # the seed's greens
    ("H100", ("#1f4e79", "#2e75b6", "#9dc3e6")),
    ("B200", ("#7030a0", "#9e63c7", "#cdb0e3")),
    ("MI2", ("#c55a11", "#ed7d31", "#f4b183")),
    ("A100", ("#7f6000", "#bf9000", "#ffd966")),
)
_SHADE = {"vllm": 0, "trt-llm": 1, "trtllm": 1, "tensorrt-llm": 1, "sglang": 2}
# order of the seed's legends: vLLM first, then SGLang, then TensorRT-LLM
_BACKEND_ORDER = {"vllm": 0, "sglang": 1, "trt-llm": 2, "trtllm": 2, "tensorrt-llm": 2}
_FALLBACK = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f",
             "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39")
_SHAPES = {"vllm": "circle", "sglang": "square", "trt-llm": "triangle-up", "trtllm": "triangle-up",
           "tensorrt-llm": "triangle-up"}
_OTHER_SHAPES = ("diamond", "cross", "triangle-down", "wedge", "triangle-left", "triangle-right")


@dataclass(frozen=True, kw_only=True)
class SeriesStyle:
    """Series names in legend order, with their colours and Vega marker shapes."""

    domain: tuple[str, ...]
    colors: tuple[str, ...]
    shapes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.domain) == len(self.colors) == len(self.shapes):
            raise ValueError("domain, colors and shapes must have one entry per series")

    def color(self, title: str = "Backend × hardware") -> alt.Color:
        return alt.Color("series:N", title=title, scale=alt.Scale(domain=list(self.domain), range=list(self.colors)))

    def shape(self, title: str = "Backend × hardware") -> alt.Shape:
        return alt.Shape("series:N", title=title, scale=alt.Scale(domain=list(self.domain), range=list(self.shapes)))

    def order(self, present: Iterable[str]) -> list[str]:
        """``present`` series in legend order (for the x offset of grouped bars)."""
        present = set(present)
        return [s for s in self.domain if s in present]

    def of(self, series: str) -> tuple[str, str]:
        i = self.domain.index(series)
        return self.colors[i], self.shapes[i]


def _family(hardware: str | None) -> tuple[int, tuple[str, str, str]] | None:
    if not hardware:
        return None
    for i, (prefix, shades) in enumerate(_FAMILIES):
        if hardware.upper().startswith(prefix):
            return i, shades
    return None


def series_style(frame: pl.DataFrame) -> SeriesStyle:
    """The style of every series in ``frame``; give all charts of a report the same frame."""
    frame = as_report_frame(frame)
    rows = frame.select("series", "backend", "hardware", "run").unique(subset="series", maintain_order=True)
    runs = {run: i for i, run in enumerate(frame["run"].unique(maintain_order=True).to_list())}

    def sort_key(row: dict) -> tuple:
        family = _family(row["hardware"])
        return (
            runs.get(row["run"], 0),
            _BACKEND_ORDER.get(row["backend"].lower(), 3),
            row["backend"].lower(),
            family[0] if family else len(_FAMILIES),
            row["hardware"] or "",
            row["series"],
        )

    ordered = sorted(rows.to_dicts(), key=sort_key)
    used: set[str] = set()
    colors, shapes = [], []
    other_shapes: dict[str, str] = {}
    for row in ordered:
        backend = row["backend"].lower()
        family = _family(row["hardware"])
        candidates: list[str] = []
        if family:  # a second series of the same hardware × backend must not look like the first
            candidates.append(family[1][_SHADE.get(backend, 1)])
        candidates += _FALLBACK
        color = next((c for c in candidates if c not in used), _FALLBACK[len(colors) % len(_FALLBACK)])
        used.add(color)
        colors.append(color)
        if backend in _SHAPES:
            shapes.append(_SHAPES[backend])
        else:
            shapes.append(other_shapes.setdefault(backend, _OTHER_SHAPES[len(other_shapes) % len(_OTHER_SHAPES)]))
    return SeriesStyle(domain=tuple(r["series"] for r in ordered), colors=tuple(colors), shapes=tuple(shapes))

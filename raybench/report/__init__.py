"""Reports: the seed's charts in Altair, a self-contained HTML report, comparisons.

Polars, Altair and vl-convert only (never Ray), so a run dir copied off a cluster can be
reported on a laptop. Sources of numbers: a raybench run dir, the seed's published results
(shipped as data), vLLM's --save-result JSON and SGLang's bench_serving JSONL (``sources.py``);
all become one report frame (``frame.py``) that every chart reads.
"""

from raybench.report.build import ReportResult, build_report, draw_charts, write_images, write_run_report
from raybench.report.charts import CHARTS, ChartDef, chart_data
from raybench.report.compare import CompareResult, compare_sources, ratio_table
from raybench.report.drilldown import cell_drilldown, cell_flags, drilldown_data
from raybench.report.frame import COLUMNS, as_report_frame, combine_runs, report_frame, series_label
from raybench.report.slices import NothingToDraw
from raybench.report.sources import PUBLISHED, load_source, published_csv
from raybench.report.style import SeriesStyle, series_style

__all__ = [
    "CHARTS",
    "COLUMNS",
    "PUBLISHED",
    "ChartDef",
    "CompareResult",
    "NothingToDraw",
    "ReportResult",
    "SeriesStyle",
    "as_report_frame",
    "build_report",
    "cell_drilldown",
    "cell_flags",
    "chart_data",
    "combine_runs",
    "compare_sources",
    "drilldown_data",
    "draw_charts",
    "load_source",
    "published_csv",
    "ratio_table",
    "report_frame",
    "series_label",
    "series_style",
    "write_images",
    "write_run_report",
]

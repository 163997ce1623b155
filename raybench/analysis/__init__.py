"""Metrics from raybench's raw tables, under raybench's, SGLang's or vLLM's definitions.

Polars and numpy only (never Ray), so a copied run dir can be analysed on a laptop. See
docs/metrics.md for the definitions and the upstream files each compat mode follows.
"""

from raybench.analysis.compat import CompatMode, CompatRules, compat_rules, parse_compat
from raybench.analysis.metrics import ItlLists, itl_lists, request_metrics
from raybench.analysis.stats import Stats, describe
from raybench.analysis.summary import (
    SUMMARY_VERSION,
    format_summary_table,
    summarize_cell,
    summarize_offline,
    summary_frame,
)

__all__ = [
    "SUMMARY_VERSION",
    "CompatMode",
    "CompatRules",
    "ItlLists",
    "Stats",
    "compat_rules",
    "describe",
    "format_summary_table",
    "itl_lists",
    "parse_compat",
    "request_metrics",
    "summarize_cell",
    "summarize_offline",
    "summary_frame",
]

"""Local report of a run: summary table, figures and an offline HTML page built from ``alignment.csv``."""

from .build import ReportFiles, build_report
from .figures import plot_final_vs_depth, plot_heatmap, plot_nulls, plot_score_vs_step
from .table import (
    load_alignment,
    load_probe_stats,
    null_comparison,
    pair_curves,
    prepare_alignment,
    shift_magnitudes,
    summarize,
)

__all__ = [
    "ReportFiles",
    "build_report",
    "load_alignment",
    "load_probe_stats",
    "null_comparison",
    "pair_curves",
    "plot_final_vs_depth",
    "plot_heatmap",
    "plot_nulls",
    "plot_score_vs_step",
    "prepare_alignment",
    "shift_magnitudes",
    "summarize",
]

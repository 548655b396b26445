"""Write the local report of a run directory: figures, ``summary.csv`` and ``index.html``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from . import figures
from .html import FigureEntry, render_index
from .table import (
    ID_PROBE,
    load_alignment,
    load_probe_stats,
    native_metrics,
    null_comparison,
    pair_curves,
    shift_magnitudes,
    steps_per_epoch,
    summarize,
)

logger = logging.getLogger(__name__)

ALIGNMENT_FILE = "alignment.csv"
PROBE_STATS_FILE = "probe_stats.csv"
SUMMARY_FILE = "summary.csv"
INDEX_FILE = "index.html"
FIGURE_DPI = 130


@dataclass
class ReportFiles:
    """Paths the report wrote."""

    out_dir: Path
    summary: Path
    index: Path
    figures: list[Path] = field(default_factory=list)


@dataclass
class _FigureTask:
    entry: FigureEntry
    draw: Callable[[], Figure]


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    log_step: bool = False,
    matrix_metrics: Sequence[str] | None = None,
    id_probe: str = ID_PROBE,
    min_final_score: float = 0.0,
    progress: bool = True,
) -> ReportFiles:
    """Read ``alignment.csv`` (and ``probe_stats.csv`` if present) from ``run_dir`` and write the report.

    The report goes to ``out_dir``, by default ``<run_dir>/report``.
    ``matrix_metrics`` limits the layer × step heatmaps to those metrics
    (default: every native metric). ``min_final_score`` is passed to
    :func:`~convergence_monitor.report.table.summarize`. ``progress`` shows a
    progress bar over the figures.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``alignment.csv``.
        ValueError: the table is invalid, has no rows for ``id_probe``, or a
            requested heatmap metric is not in it.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"

    table = load_alignment(run_dir / ALIGNMENT_FILE)
    probes = sorted(table["probe"].unique())
    if id_probe not in probes:
        raise ValueError(
            f"{run_dir / ALIGNMENT_FILE} has no rows for the in-distribution probe set {id_probe!r}; "
            f"found {probes}. Pass the in-distribution probe name as id_probe (--id-probe on the command line)."
        )
    metrics = native_metrics(table)
    heatmap_metrics = _check_heatmap_metrics(matrix_metrics, metrics)
    probe_stats = load_probe_stats(run_dir / PROBE_STATS_FILE)
    shift = shift_magnitudes(probe_stats, id_probe) if probe_stats is not None else None
    logger.info(
        "loaded %d rows: %d probe sets, %d layers, %d metrics, %d NaN scores",
        len(table),
        len(probes),
        table["layer"].nunique(),
        len(metrics),
        int(table["score"].isna().sum()),
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(table, min_final_score=min_final_score)
    summary_path = out_dir / SUMMARY_FILE
    summary.to_csv(summary_path, index=False)

    native = table.loc[table["metric"].isin(metrics)]
    curves = pair_curves(native)
    comparison = null_comparison(table)
    epoch_steps = steps_per_epoch(table)
    tasks = _figure_tasks(curves, summary, comparison, shift, heatmap_metrics, id_probe, log_step, epoch_steps)

    written = []
    for task in _with_progress(tasks, enabled=progress):
        figure = task.draw()
        path = out_dir / task.entry.filename
        figure.savefig(path, dpi=FIGURE_DPI)
        written.append(path)

    index_path = out_dir / INDEX_FILE
    page = render_index(
        title=f"Cross-seed alignment report: {run_dir.resolve().name}",
        metadata=_metadata_lines(run_dir, table, probes, metrics, epoch_steps),
        figures=[task.entry for task in tasks],
        summary=summary,
        definitions=SUMMARY_DEFINITIONS,
        shift=shift,
        missing=_missing_scores(native),
    )
    index_path.write_text(page, encoding="utf-8")
    logger.info("wrote %d figures, %s and %s to %s", len(written), SUMMARY_FILE, INDEX_FILE, out_dir)
    return ReportFiles(out_dir=out_dir, summary=summary_path, index=index_path, figures=written)


SUMMARY_DEFINITIONS = (
    ("final_step", "Last step at which the probe set, layer and metric have rows."),
    ("final_score", "Mean over seed pairs of the score at final_step; NaN scores are left out."),
    ("final_std", "Sample standard deviation (ddof=1) over those pairs; n/a with fewer than two pairs."),
    (
        "ci_low, ci_high",
        "95% t interval of the mean over pairs. Pairs that share a seed are correlated, "
        "so the interval is narrower than one over independent seeds.",
    ),
    ("n_pairs, n_missing_final, n_missing", "Pairs with a score at final_step, NaN pairs there, NaN scores over all steps."),
    ("epoch1_step, epoch1_score", "Last step with epoch ≤ 1 and the mean over pairs there."),
    ("fraction_at_epoch1", "epoch1_score / final_score. It can exceed 1 when the score starts high or peaks early."),
    (
        "step_reach_90",
        "First step whose mean over pairs is at least 0.9 × final_score; the score need not stay above it.",
    ),
    (
        "note",
        "Why the two ratios are n/a: the final score is missing or ≤ the minimum final score "
        "(near chance, so the ratio means nothing) or the metric is a distance. fraction_at_epoch1 alone is n/a "
        "when the run ends before epoch 1 or has no score at the end of epoch 1.",
    ),
    (
        "null_step, <null>_mean, <null>_p_max",
        "Step of the null baselines, the mean null score over pairs, and the largest p-value over pairs.",
    ),
)


def _figure_tasks(
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    comparison: pd.DataFrame,
    shift: pd.DataFrame | None,
    heatmap_metrics: list[str],
    id_probe: str,
    log_step: bool,
    epoch_steps: float | None,
) -> list[_FigureTask]:
    axis_options = {"id_probe": id_probe, "log_step": log_step, "steps_per_epoch": epoch_steps}
    tasks = [
        _FigureTask(
            FigureEntry(
                "score_vs_step.png",
                "Score against step",
                f"Mean score over seed pairs on probe set '{id_probe}', one line per layer coloured by depth; "
                "the band is ± 1 std over pairs and dotted lines mark epoch boundaries.",
            ),
            lambda: figures.plot_score_vs_step(curves, **axis_options),
        )
    ]
    for metric in heatmap_metrics:
        tasks.append(
            _FigureTask(
                FigureEntry(
                    f"heatmap_{_file_stem(metric)}.png",
                    f"Layer × step heatmap: {metric}",
                    f"Mean {metric} score over seed pairs on probe set '{id_probe}'; grey cells are missing.",
                ),
                lambda metric=metric: figures.plot_heatmap(curves, metric, **axis_options),
            )
        )
    tasks.append(
        _FigureTask(
            FigureEntry(
                "final_vs_depth.png",
                "Final score against depth",
                "Final score (mean over seed pairs at the last step) per layer for every probe set; "
                "corrupted probe sets are coloured by severity.",
            ),
            lambda: figures.plot_final_vs_depth(summary, shift=shift, id_probe=id_probe),
        )
    )
    if (comparison["probe"] == id_probe).any():
        tasks.append(
            _FigureTask(
                FigureEntry(
                    "nulls.png",
                    "Native scores against null baselines",
                    "Native score per layer beside the rotated-basis and shuffled-sample null means at the step "
                    "where the nulls were measured; each p-value is the largest over seed pairs.",
                ),
                lambda: figures.plot_nulls(comparison, id_probe=id_probe),
            )
        )
    else:
        logger.info("no null baselines on probe set %r; skipping nulls.png", id_probe)
    return tasks


def _check_heatmap_metrics(requested: Sequence[str] | None, available: list[str]) -> list[str]:
    if not requested:
        return available
    unknown = [metric for metric in requested if metric not in available]
    if unknown:
        raise ValueError(f"heatmap metrics {unknown} are not in the table; choose from {available}")
    return list(dict.fromkeys(requested))


def _with_progress(tasks: list[_FigureTask], enabled: bool) -> Iterable[_FigureTask]:
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    if enabled and tqdm is not None:
        yield from tqdm(tasks, desc="figures", unit="fig")
        return
    for number, task in enumerate(tasks, start=1):
        if enabled:
            logger.info("figure %d/%d: %s", number, len(tasks), task.entry.filename)
        yield task


def _metadata_lines(
    run_dir: Path, table: pd.DataFrame, probes: list[str], metrics: list[str], epoch_steps: float | None
) -> list[str]:
    pairs = table[["seed_a", "seed_b"]].drop_duplicates()
    epoch_text = f"{epoch_steps:g} optimizer steps per epoch" if epoch_steps else "steps per epoch unknown"
    return [
        f"Run directory: {run_dir.resolve()}",
        f"Steps {table['step'].min()} to {table['step'].max()} ({table['step'].nunique()} measured), {epoch_text}; "
        f"{len(pairs)} seed pairs.",
        f"Probe sets: {', '.join(probes)}. Metrics: {', '.join(metrics)}.",
        f"{int(table['score'].isna().sum())} of {len(table)} scores are NaN (missing).",
    ]


def _missing_scores(native: pd.DataFrame) -> pd.DataFrame:
    missing = native.loc[native["score"].isna()]
    return (
        missing.groupby(["probe", "layer", "metric", "step"])
        .size()
        .rename("missing_pairs")
        .reset_index()
    )


def _file_stem(metric: str) -> str:
    return "".join(character if character.isalnum() or character in "-_" else "_" for character in metric)

"""Figures of the local report, each built from a DataFrame and returned as a matplotlib Figure.

Figures are created with ``matplotlib.figure.Figure`` rather than pyplot, so
they use the Agg canvas whatever backend the caller has selected and leave
no global pyplot state behind. The caller saves them with ``savefig``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

from .table import ID_PROBE, is_distance_metric, order_metrics, probe_severity

STEP_LABEL = "optimizer step"
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

# Okabe and Ito's palette, distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# viridis without its palest 15 %, whose yellow is hard to see as a thin line on white.
DEPTH_COLORMAP = ListedColormap(mpl.colormaps["viridis"](np.linspace(0.0, 0.85, 256)), name="viridis_dark")
HEATMAP_COLORMAP = "viridis"
SEVERITY_COLORMAP = "plasma"
FAMILY_LINESTYLES = ("--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1)))
FAMILY_MARKERS = ("s", "^", "D", "v", "P")
MAX_LABELLED_LAYERS = 12
MAX_EPOCH_LINES = 20


def plot_score_vs_step(
    curves: pd.DataFrame,
    *,
    id_probe: str = ID_PROBE,
    log_step: bool = False,
    steps_per_epoch: float | None = None,
) -> Figure:
    """Plot the mean score over seed pairs against step, one panel per metric and one line per layer.

    ``curves`` is the output of :func:`~convergence_monitor.report.table.pair_curves`
    for native metrics. Only the ``id_probe`` rows are drawn. Lines are
    coloured by depth, the band is ± one std over pairs, and dotted vertical
    lines mark epoch boundaries when ``steps_per_epoch`` is given. Missing
    means (every pair NaN) leave a gap in the line.
    """
    curves = curves.loc[curves["probe"] == id_probe]
    metrics = order_metrics(curves["metric"])
    depths = curves.groupby("layer")["depth"].first().sort_values(kind="stable")
    norm = Normalize(vmin=depths.min(), vmax=max(depths.max(), depths.min() + 1))
    cmap = DEPTH_COLORMAP

    with mpl.rc_context(STYLE):
        figure, axes = _panel_grid(len(metrics), panel_size=(5.0, 3.6))
        for ax, metric in zip(axes, metrics):
            for layer, depth in depths.items():
                curve = curves.loc[(curves["metric"] == metric) & (curves["layer"] == layer)].sort_values("step")
                if curve.empty:
                    continue
                color = cmap(norm(depth))
                ax.plot(curve["step"], curve["mean"], color=color, linewidth=1.6, label=layer)
                ax.fill_between(
                    curve["step"],
                    curve["mean"] - curve["std"],
                    curve["mean"] + curve["std"],
                    color=color,
                    alpha=0.15,
                    linewidth=0,
                )
            max_step = curves.loc[curves["metric"] == metric, "step"].max()
            _mark_epochs(ax, steps_per_epoch, max_step, log_step=log_step)
            _set_step_axis(ax, log_step, max_step)
            ax.set_ylabel(_value_label(metric))
            ax.set_title(metric)

        colorbar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9, pad=0.02)
        _label_depth_colorbar(colorbar, depths)
        figure.suptitle(f"Score against step on probe set '{id_probe}' (band: ± 1 std over seed pairs)")
    return figure


def plot_heatmap(
    curves: pd.DataFrame,
    metric: str,
    *,
    id_probe: str = ID_PROBE,
    log_step: bool = False,
    steps_per_epoch: float | None = None,
) -> Figure:
    """Draw one metric's mean score over seed pairs as a layer × step heatmap on the ``id_probe`` rows.

    Rows are layers ordered by depth (the first layer at the top); each cell
    spans halfway to its neighbouring steps, so the x axis is in optimizer
    steps. Missing cells (every pair NaN) are grey.
    """
    rows = curves.loc[(curves["probe"] == id_probe) & (curves["metric"] == metric)]
    if rows.empty:
        raise ValueError(f"no rows for metric {metric!r} on probe set {id_probe!r}")
    grid = rows.pivot(index="layer", columns="step", values="mean")
    depths = rows.groupby("layer")["depth"].first().sort_values(kind="stable")
    grid = grid.loc[depths.index]
    steps = grid.columns.to_numpy(dtype=float)

    cmap = mpl.colormaps[HEATMAP_COLORMAP].with_extremes(bad="#bdbdbd")
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(8.0, 1.2 + 0.32 * len(depths)), layout="constrained")
        ax = figure.add_subplot()
        mesh = ax.pcolormesh(
            _cell_edges(steps),
            np.arange(len(depths) + 1) - 0.5,
            np.ma.masked_invalid(grid.to_numpy(dtype=float)),
            cmap=cmap,
            shading="flat",
        )
        ax.set_yticks(np.arange(len(depths)), labels=list(depths.index))
        ax.invert_yaxis()
        ax.grid(False)
        _mark_epochs(ax, steps_per_epoch, steps.max(), log_step=log_step, outlined=True)
        _set_step_axis(ax, log_step, steps.max(), left=_cell_edges(steps)[0])
        ax.set_ylabel("layer (by depth)")
        ax.set_title(f"{metric} on probe set '{id_probe}', mean over seed pairs (grey: missing)")
        figure.colorbar(mesh, ax=ax, label=_value_label(metric), pad=0.02)
    return figure


def plot_final_vs_depth(
    summary: pd.DataFrame,
    *,
    shift: pd.DataFrame | None = None,
    id_probe: str = ID_PROBE,
) -> Figure:
    """Plot the final score against depth, one panel per metric, one line per probe set.

    ``summary`` is the output of :func:`~convergence_monitor.report.table.summarize`.
    The in-distribution probe is black with a ± one std band. Out-of-distribution
    probes named ``family-severity`` are coloured by severity with one line
    style per family; other probes get categorical colours. When ``shift``
    (from :func:`~convergence_monitor.report.table.shift_magnitudes`) is given,
    legend entries carry each probe's accuracy drop and Fréchet distance.
    """
    metrics = order_metrics(summary["metric"])
    probes = _order_probes(summary["probe"].unique(), id_probe)
    styles = _probe_styles(probes, id_probe)
    depths = summary.groupby("layer")["depth"].first().sort_values(kind="stable")

    with mpl.rc_context(STYLE):
        figure, axes = _panel_grid(len(metrics), panel_size=(5.0, 3.8))
        for ax, metric in zip(axes, metrics):
            for probe in probes:
                rows = summary.loc[(summary["metric"] == metric) & (summary["probe"] == probe)].sort_values("depth")
                if rows.empty:
                    continue
                style = styles[probe]
                ax.plot(rows["depth"], rows["final_score"], label=_probe_label(probe, shift, id_probe), **style)
                if probe == id_probe:
                    ax.fill_between(
                        rows["depth"],
                        rows["final_score"] - rows["final_std"],
                        rows["final_score"] + rows["final_std"],
                        color=style["color"],
                        alpha=0.12,
                        linewidth=0,
                    )
            _set_layer_ticks(ax, depths)
            ax.set_ylabel(f"final {_value_label(metric)}")
            ax.set_title(metric)

        handles, labels = _unique_legend_entries(axes)
        figure.legend(handles, labels, loc="outside right upper", title="probe set")
        figure.suptitle("Final score against depth, in and out of distribution (mean over seed pairs)")
    return figure


def plot_nulls(comparison: pd.DataFrame, *, id_probe: str = ID_PROBE) -> Figure:
    """Plot native scores beside their null baselines per layer, one panel per metric.

    ``comparison`` is the output of
    :func:`~convergence_monitor.report.table.null_comparison`; only the
    ``id_probe`` rows are drawn. Each null mean carries the largest p-value
    over seed pairs above its marker.
    """
    rows = comparison.loc[comparison["probe"] == id_probe]
    if rows.empty:
        raise ValueError(f"no null baselines on probe set {id_probe!r}")
    metrics = order_metrics(rows["metric"])
    variants = sorted(column.removesuffix("_mean") for column in rows.columns if column.endswith("_mean") and column != "native_mean")
    series = ["native", *variants]
    offsets = np.linspace(-0.27, 0.27, len(series)) if len(series) > 1 else np.zeros(1)
    markers = ("o", "s", "^", "D", "v")

    with mpl.rc_context(STYLE):
        figure, axes = _panel_grid(len(metrics), panel_size=(5.5, 4.0))
        for ax, metric in zip(axes, metrics):
            panel = rows.loc[rows["metric"] == metric].sort_values("depth")
            positions = np.arange(len(panel))
            values = [panel[f"{name}_mean"].to_numpy(dtype=float) for name in series]
            for index, name in enumerate(series):
                x = positions + offsets[index]
                error = panel["native_std"] if name == "native" else None
                ax.errorbar(
                    x,
                    values[index],
                    yerr=error,
                    fmt=markers[index % len(markers)],
                    color=OKABE_ITO[index % len(OKABE_ITO)],
                    markersize=6,
                    capsize=2,
                    linestyle="none",
                    label=name if name == "native" else f"{name} null",
                )
                p_column = f"{name}_p_max"
                if name != "native" and p_column in panel.columns:
                    for x_value, y_value, p_value in zip(x, values[index], panel[p_column]):
                        _annotate_p_value(ax, x_value, y_value, p_value)
            _pad_top(ax, values)
            ax.set_xticks(positions, labels=list(panel["layer"]), rotation=45, ha="right")
            ax.set_xlabel("layer (by depth)")
            ax.set_ylabel(_value_label(metric))
            steps = sorted(panel["null_step"].unique())
            ax.set_title(f"{metric} (step {', '.join(str(step) for step in steps)})")

        handles, labels = _unique_legend_entries(axes)
        figure.legend(handles, labels, loc="outside lower center", ncols=len(series))
        figure.suptitle(f"Native scores and null baselines on probe set '{id_probe}'")
    return figure


def _panel_grid(count: int, panel_size: tuple[float, float], max_columns: int = 3) -> tuple[Figure, list]:
    columns = min(max_columns, max(count, 1))
    rows = math.ceil(max(count, 1) / columns)
    figure = Figure(figsize=(panel_size[0] * columns + 1.5, panel_size[1] * rows + 0.8), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for spare in axes[count:]:
        spare.set_visible(False)
    return figure, axes[:count]


def _set_step_axis(ax, log_step: bool, max_step: float, left: float | None = None) -> None:
    if log_step:
        # symlog is linear on [0, 1], so step 0 (before the first update) stays on the axis.
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        # Ticks at 1, 2 and 5 per decade crowd together beyond about three decades.
        subs = (1, 2, 5) if max_step < 1000 else (1,)
        ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1, subs=subs))
        # Autoscaling margins would otherwise reach into negative steps, which a log axis stretches.
        ax.set_xlim(left=-0.2 if left is None else left)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xlabel(f"{STEP_LABEL} (symmetric log scale)")
    else:
        ax.set_xlabel(STEP_LABEL)


def _mark_epochs(
    ax, steps_per_epoch: float | None, max_step: float, log_step: bool = False, outlined: bool = False
) -> None:
    if not steps_per_epoch or steps_per_epoch <= 0:
        return
    # On a heatmap a white line with a black outline stays visible on every colour.
    color = "white" if outlined else "0.35"
    effects = [patheffects.withStroke(linewidth=2.5, foreground="black")] if outlined else None
    epochs = int(max_step // steps_per_epoch)
    stride = max(1, math.ceil(epochs / MAX_EPOCH_LINES))
    for epoch in range(stride, epochs + 1, stride):
        step = epoch * steps_per_epoch
        ax.axvline(step, color=color, linestyle=":", linewidth=1.0, zorder=2.5 if outlined else 0.5, path_effects=effects)
        # A log axis packs later epochs together, so only epochs 1, 2, 5, 10, 20, ... get a label.
        if log_step and not _is_one_two_five(epoch):
            continue
        ax.annotate(
            f"ep {epoch}",
            xy=(step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=8,
            color=color,
            path_effects=effects,
        )


def _is_one_two_five(number: int) -> bool:
    digits = str(number)
    return digits[0] in "125" and set(digits[1:]) <= {"0"}


def _cell_edges(steps: np.ndarray) -> np.ndarray:
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middles = (steps[:-1] + steps[1:]) / 2
    first = steps[0] - (middles[0] - steps[0])
    last = steps[-1] + (steps[-1] - middles[-1])
    return np.concatenate([[first], middles, [last]])


def _value_label(metric: str) -> str:
    return "distance" if is_distance_metric(metric) else "score"


def _label_depth_colorbar(colorbar, depths: pd.Series) -> None:
    if len(depths) <= MAX_LABELLED_LAYERS:
        colorbar.set_ticks(list(depths.to_numpy()), labels=[f"{layer} ({depth})" for layer, depth in depths.items()])
        colorbar.set_label("layer (depth)")
    else:
        colorbar.set_label("layer depth (0 = first layer)")


def _set_layer_ticks(ax, depths: pd.Series) -> None:
    ax.set_xticks(list(depths.to_numpy()), labels=list(depths.index), rotation=45, ha="right")
    ax.set_xlabel("layer (by depth)")


def _order_probes(probes: Sequence[str], id_probe: str) -> list[str]:
    def sort_key(probe: str):
        family, severity = probe_severity(probe)
        return (probe != id_probe, severity is None, family, severity or 0)

    return sorted(probes, key=sort_key)


def _probe_styles(probes: Sequence[str], id_probe: str) -> dict[str, dict]:
    severities = [probe_severity(probe)[1] for probe in probes if probe != id_probe]
    top_severity = max([severity for severity in severities if severity is not None] + [5])
    severity_colors = mpl.colormaps[SEVERITY_COLORMAP]
    families = sorted({probe_severity(probe)[0] for probe in probes if probe_severity(probe)[1] is not None})

    styles = {}
    natural_index = 0
    for probe in probes:
        family, severity = probe_severity(probe)
        if probe == id_probe:
            styles[probe] = {"color": "black", "linestyle": "-", "marker": "o", "linewidth": 2.2, "markersize": 5}
        elif severity is not None:
            family_index = families.index(family)
            # Stay inside [0.1, 0.85] of plasma: its ends are too dark and too pale to read as lines.
            shade = 0.1 + 0.75 * (severity - 1) / max(top_severity - 1, 1)
            styles[probe] = {
                "color": severity_colors(shade),
                "linestyle": FAMILY_LINESTYLES[family_index % len(FAMILY_LINESTYLES)],
                "marker": FAMILY_MARKERS[family_index % len(FAMILY_MARKERS)],
                "linewidth": 1.5,
                "markersize": 4,
            }
        else:
            styles[probe] = {
                "color": OKABE_ITO[natural_index % (len(OKABE_ITO) - 1)],
                "linestyle": (0, (1, 1)),
                "marker": "x",
                "linewidth": 1.8,
                "markersize": 5,
            }
            natural_index += 1
    return styles


def _probe_label(probe: str, shift: pd.DataFrame | None, id_probe: str) -> str:
    if shift is None or probe == id_probe or probe not in set(shift["probe"]):
        return probe
    row = shift.loc[shift["probe"] == probe].iloc[0]
    parts = [f"acc. drop {row['accuracy_drop']:.3g}"]
    if "frechet_distance" in shift.columns and pd.notna(row["frechet_distance"]):
        parts.append(f"FD {row['frechet_distance']:.3g}")
    return f"{probe} ({', '.join(parts)})"


def _unique_legend_entries(axes) -> tuple[list, list[str]]:
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries.keys())


def _annotate_p_value(ax, x: float, y: float, p_value: float) -> None:
    if not np.isfinite(y):
        return
    text = "p n/a" if not np.isfinite(p_value) else f"p={p_value:.2g}"
    ax.annotate(
        text,
        xy=(x, y),
        xytext=(0, 7),
        textcoords="offset points",
        rotation=90,
        ha="center",
        va="bottom",
        fontsize=7.5,
    )


def _pad_top(ax, values: list[np.ndarray]) -> None:
    finite = np.concatenate([value[np.isfinite(value)] for value in values])
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    span = max(high - low, 0.1)
    # Leave room above the highest marker for the rotated p-value labels.
    ax.set_ylim(min(low, 0.0) - 0.05 * span, high + 0.45 * span)

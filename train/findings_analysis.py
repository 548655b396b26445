"""Reduce a findings run to tables and figures for the four convergent-learning findings.

    python train/findings_analysis.py RUN_DIR

Reads ``alignment.csv``, ``probe_stats.csv`` and ``null_draws.csv``
(written by ``train/findings.py``) and writes, under
``RUN_DIR/findings/``, one CSV per finding, ``summary.md`` (the same tables
in Markdown) and one figure per finding. Criteria, as tested here:

- S1: Procrustes ≥ 0.9 × linear regression at most layers (more than half);
  permutation and soft matching below Procrustes.
- S2: soft matching above the pooled rotated-basis null with p < 0.01 at
  every layer, for the mean over pairs and for every single pair.
- S3: at least 80% of the final score reached at the end of epoch 1, per
  layer and metric.
- S4: the out-of-distribution drop (in-distribution score minus shifted
  score, at the final step) grows with depth (Spearman correlation of drop
  and depth > 0) and with severity (severity 5 drop > severity 1 drop).

Confidence intervals are 95% t intervals over the seed pairs. Pairs that
share a seed are correlated, so these intervals are narrower than intervals
over independent seeds would be.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from convergence_monitor.report.table import (  # noqa: E402
    layer_order,
    load_alignment,
    probe_severity,
    summarize,
)

ID = "id"
S1_RATIO = 0.9
S2_ALPHA = 0.01
S3_FRACTION = 0.8
METRIC_LABELS = {"linear_regression": "linear", "procrustes": "Procrustes", "permutation": "permutation",
                 "soft_matching": "soft matching", "linear_cka": "linear CKA"}


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Return (mean, low, high) of the t interval of the mean, with NaN bounds below 2 finite values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def seed_bootstrap_interval(pairs: pd.DataFrame, draws: int = 2000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float]:
    """Return a percentile interval of the mean pair score, resampling seeds rather than pairs.

    ``pairs`` has the columns seed_a, seed_b and score. Each replicate draws
    as many seeds as there are, with replacement, and averages the scores of
    all pairs of draws that are distinct seeds (a pair appears once per
    matching couple of draws). Replicates with fewer than two distinct seeds
    are skipped. Resampling whole seeds keeps the correlation between pairs
    that share a seed, which the t interval over pairs ignores.
    """
    seeds = sorted(set(pairs["seed_a"]) | set(pairs["seed_b"]))
    index = {seed: i for i, seed in enumerate(seeds)}
    matrix = np.full((len(seeds), len(seeds)), np.nan)
    for a, b, score in zip(pairs["seed_a"], pairs["seed_b"], pairs["score"]):
        matrix[index[a], index[b]] = matrix[index[b], index[a]] = score
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(draws):
        chosen = rng.integers(0, len(seeds), size=len(seeds))
        block = matrix[np.ix_(chosen, chosen)]
        upper = block[np.triu_indices(len(chosen), k=1)]
        upper = upper[np.isfinite(upper)]
        if upper.size:
            means.append(upper.mean())
    if not means:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def final_pair_scores(table: pd.DataFrame, probe: str = ID) -> pd.DataFrame:
    """Return native pair scores at each metric's final step, one row per (layer, metric, pair)."""
    native = table.loc[(table["probe"] == probe) & ~table["metric"].str.contains("@", regex=False)]
    last = native.groupby(["layer", "metric"])["step"].transform("max")
    return native.loc[native["step"] == last]


# ---------------------------------------------------------------- S1


def s1_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return, per layer, each metric's final score over linear regression's per pair, with its t interval."""
    final = final_pair_scores(table)
    wide = final.pivot_table(index=["layer", "seed_a", "seed_b"], columns="metric", values="score")
    rows = []
    for layer in layer_order(table.loc[table["probe"] == ID]):
        pairs = wide.loc[layer]
        row = {"layer": layer}
        for metric in ("linear_regression", "procrustes", "permutation", "soft_matching"):
            if metric in pairs:
                row[metric] = float(pairs[metric].mean())
        for metric in ("procrustes", "permutation", "soft_matching"):
            if metric in pairs and "linear_regression" in pairs:
                mean, low, high = t_interval(pairs[metric] / pairs["linear_regression"])
                row[f"{metric}_ratio"], row[f"{metric}_ratio_low"], row[f"{metric}_ratio_high"] = mean, low, high
        rows.append(row)
    result = pd.DataFrame(rows)
    result["s1_holds"] = result["procrustes_ratio"] >= S1_RATIO
    return result


# ---------------------------------------------------------------- S2


def pooled_null(draws: pd.DataFrame) -> pd.DataFrame:
    """Test each layer's soft-matching score against the rotated-basis null pooled over its seed pairs.

    Under the null hypothesis (the units carry no privileged basis) a
    rotated copy of seed B scores like seed B itself, and this holds for
    every pair alike, so the K = pairs × draws null scores of a layer are
    exchangeable and are pooled. With ``z`` the pooled draws:

    - ``p_mean = (1 + #{z ≥ mean observed over pairs}) / (K + 1)``;
    - ``p_pair_max``: the largest over pairs of
      ``(1 + #{z ≥ that pair's observed score}) / (K + 1)``.

    The smallest attainable p-value is 1 / (K + 1).
    """
    rows = []
    for layer, group in draws.groupby("layer", sort=False):
        pooled = group["null"].to_numpy()
        observed = group.groupby(["seed_a", "seed_b"])["observed"].first().to_numpy()
        count = pooled.size
        p_pairs = [(1 + int((pooled >= value).sum())) / (count + 1) for value in observed]
        mean_observed = float(observed.mean())
        rows.append({
            "layer": layer,
            "depth": int(group["depth"].iloc[0]),
            "observed_mean": mean_observed,
            "observed_min": float(observed.min()),
            "null_mean": float(pooled.mean()),
            "null_q99": float(np.quantile(pooled, 0.99)),
            "null_max": float(pooled.max()),
            "pooled_draws": count,
            "p_mean": (1 + int((pooled >= mean_observed).sum())) / (count + 1),
            "p_pair_max": max(p_pairs),
        })
    result = pd.DataFrame(rows).sort_values("depth").reset_index(drop=True)
    result["s2_holds"] = result["p_pair_max"] < S2_ALPHA
    return result


# ---------------------------------------------------------------- S3


def s3_table(table: pd.DataFrame, probe_stats: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return the S3 fractions per layer and metric, and probe accuracies.

    ``fractions`` is the score at the end of epoch 1 over the final score.
    ``gains`` is (epoch-1 score − step-0 score) / (final − step-0 score): the
    share of the change made during epoch 1, which is less flattering when
    random networks already align well at step 0.
    """
    summary = summarize(table.loc[table["probe"] == ID])
    summary = summary.loc[~summary["metric"].str.contains("@", regex=False)]
    fractions = summary.pivot_table(index="layer", columns="metric", values="fraction_at_epoch1")
    fractions = fractions.reindex(layer_order(table.loc[table["probe"] == ID]))
    fractions = fractions[[m for m in METRIC_LABELS if m in fractions.columns]]
    # The step-0 score of random networks is far from 0 at many layers, so also report the share
    # of the change from step 0 to the final step that was made by the end of epoch 1.
    in_dist = table.loc[(table["probe"] == ID) & ~table["metric"].str.contains("@", regex=False)]
    start = in_dist.loc[in_dist["step"] == in_dist["step"].min()].groupby(["layer", "metric"])["score"].mean()
    indexed = summary.set_index(["layer", "metric"])
    gain = (indexed["epoch1_score"] - start) / (indexed["final_score"] - start)
    gains = gain.unstack("metric").reindex(index=fractions.index, columns=fractions.columns)
    accuracy = {}
    if probe_stats is not None and not summary.empty:
        epoch1_step = int(summary["epoch1_step"].dropna().iloc[0])
        id_stats = probe_stats.loc[probe_stats["probe"] == ID]
        by_step = id_stats.groupby("step")["accuracy"].mean()
        accuracy = {"epoch1_step": epoch1_step, "accuracy_epoch1": float(by_step.get(epoch1_step, math.nan)),
                    "final_step": int(by_step.index.max()), "accuracy_final": float(by_step.iloc[-1]),
                    "accuracy_step0": float(by_step.iloc[0])}
    return fractions, gains, accuracy


# ---------------------------------------------------------------- S4


def s4_tables(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the mean drop per (probe, layer, metric) at the final step, and its depth trends.

    The drop of a pair is its in-distribution score minus its score on the
    shifted probe set, both at the final step (the shift sets are scored
    there only). Returns (drops, trends). ``drops`` has the mean drop and
    its t interval over pairs. ``trends`` has, per probe set and metric, the
    Spearman correlation between depth and mean drop.
    """
    final_step = int(table["step"].max())
    at_final = table.loc[(table["step"] == final_step) & ~table["metric"].str.contains("@", regex=False)]
    in_dist = at_final.loc[at_final["probe"] == ID].set_index(["layer", "metric", "seed_a", "seed_b"])["score"]
    shifted = at_final.loc[at_final["probe"] != ID]
    depths = table.groupby("layer")["depth"].first()
    rows = []
    for (probe, layer, metric), group in shifted.groupby(["probe", "layer", "metric"]):
        keys = list(zip([layer] * len(group), [metric] * len(group), group["seed_a"], group["seed_b"]))
        drop = in_dist.reindex(keys).to_numpy() - group["score"].to_numpy()
        mean, low, high = t_interval(drop)
        family, severity = probe_severity(probe)
        rows.append({"probe": probe, "family": family, "severity": severity, "layer": layer,
                     "depth": int(depths[layer]), "metric": metric, "drop": mean, "drop_low": low,
                     "drop_high": high})
    drops = pd.DataFrame(rows).sort_values(["family", "severity", "metric", "depth"], na_position="last")

    trends = []
    for (probe, metric), group in drops.groupby(["probe", "metric"], sort=False):
        rho = stats.spearmanr(group["depth"], group["drop"])[0] if group["drop"].nunique() > 1 else math.nan
        first, last = group.sort_values("depth")["drop"].iloc[[0, -1]]
        trends.append({"probe": probe, "family": group["family"].iloc[0], "severity": group["severity"].iloc[0],
                       "metric": metric, "spearman_depth": float(rho), "drop_first_layer": float(first),
                       "drop_last_layer": float(last), "drop_mean": float(group["drop"].mean())})
    trends = pd.DataFrame(trends)
    drops["severity"] = drops["severity"].astype("Int64")
    trends["severity"] = trends["severity"].astype("Int64")
    return drops.reset_index(drop=True), trends


def severity_table(drops: pd.DataFrame) -> pd.DataFrame:
    """Return the drop at each severity per family, metric and layer, and whether the highest exceeds the lowest."""
    graded = drops.dropna(subset=["severity"])
    wide = graded.pivot_table(index=["family", "metric", "depth", "layer"], columns="severity", values="drop")
    wide.columns = [f"severity_{int(c)}" for c in wide.columns]
    # pivot_table sorts the severities, so the first column is the lowest and the last the highest.
    low, high = wide.columns[0], wide.columns[-1]
    wide["grows"] = wide[high] > wide[low]
    return wide.reset_index()


# ---------------------------------------------------------------- figures


def plot_s1(s1: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = np.arange(len(s1))
    for offset, metric, color in ((-0.2, "procrustes", "C0"), (0.0, "permutation", "C1"), (0.2, "soft_matching", "C2")):
        if f"{metric}_ratio" not in s1:
            continue
        mean = s1[f"{metric}_ratio"]
        err = np.vstack([mean - s1[f"{metric}_ratio_low"], s1[f"{metric}_ratio_high"] - mean])
        ax.errorbar(x + offset, mean, yerr=err, fmt="o", color=color, capsize=3,
                    label=f"{METRIC_LABELS[metric]} / linear")
    ax.axhline(S1_RATIO, color="gray", linestyle="--", linewidth=1, label=f"{S1_RATIO} (S1 threshold)")
    ax.set_xticks(x, s1["layer"], rotation=30, ha="right")
    ax.set_ylabel("final score / linear score")
    ax.legend(fontsize=8)
    ax.set_title("Score relative to a full linear map (95% CI over pairs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_s2(draws: pd.DataFrame, s2: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    layers = list(s2["layer"])
    pooled = [draws.loc[draws["layer"] == layer, "null"].to_numpy() for layer in layers]
    ax.violinplot(pooled, positions=np.arange(len(layers)), showextrema=True, widths=0.7)
    for i, layer in enumerate(layers):
        observed = draws.loc[draws["layer"] == layer].groupby(["seed_a", "seed_b"])["observed"].first()
        ax.scatter(np.full(len(observed), i), observed, color="C3", s=12, zorder=3,
                   label="observed (one per pair)" if i == 0 else None)
        p = s2.loc[s2["layer"] == layer, "p_pair_max"].iloc[0]
        ax.annotate(f"p≤{p:.3g}", (i, max(observed.max(), pooled[i].max())), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel("soft matching score")
    ax.set_title("Soft matching vs pooled rotated-basis null (violins)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_s3(fractions: pd.DataFrame, path: Path) -> None:
    metrics = [m for m in METRIC_LABELS if m in fractions.columns]
    values = fractions[metrics].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(fractions) + 1.4))
    image = ax.imshow(values, cmap="viridis", vmin=min(0.5, np.nanmin(values)), vmax=max(1.0, np.nanmax(values)),
                      aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if value < S3_FRACTION else "black")
    ax.set_xticks(np.arange(len(metrics)), [METRIC_LABELS[m] for m in metrics], rotation=20, ha="right")
    ax.set_yticks(np.arange(len(fractions)), fractions.index)
    fig.colorbar(image, ax=ax, label="score at end of epoch 1 / final")
    ax.set_title("Fraction of the final score reached by the end of epoch 1", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_s4(drops: pd.DataFrame, path: Path) -> None:
    metrics = [m for m in METRIC_LABELS if m in set(drops["metric"])]
    families = list(dict.fromkeys(drops["family"]))
    fig, axes = plt.subplots(len(metrics), len(families), figsize=(2.6 * len(families), 2.2 * len(metrics)),
                             sharex=True, sharey="row", squeeze=False)
    layers = drops.drop_duplicates("depth").sort_values("depth")["layer"].tolist()
    for row, metric in enumerate(metrics):
        for col, family in enumerate(families):
            ax = axes[row][col]
            part = drops.loc[(drops["metric"] == metric) & (drops["family"] == family)]
            for severity, curve in part.groupby("severity", dropna=False):
                curve = curve.sort_values("depth")
                label = "natural" if pd.isna(severity) else f"severity {int(severity)}"
                ax.errorbar(curve["depth"], curve["drop"],
                            yerr=[curve["drop"] - curve["drop_low"], curve["drop_high"] - curve["drop"]],
                            marker="o", markersize=3, capsize=2, label=label)
            ax.axhline(0, color="gray", linewidth=0.8)
            if row == 0:
                ax.set_title(family, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{METRIC_LABELS[metric]} drop", fontsize=9)
            if row == len(metrics) - 1:
                ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
            if row == 0:
                ax.legend(fontsize=6)
    fig.suptitle("In-distribution minus shifted score at the final step, by depth (95% CI over pairs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- main


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(value):
        if value is pd.NA:
            return ""
        if isinstance(value, (float, np.floating)):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def seed_bootstrap_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return the final in-distribution mean per layer and metric with its pair t and seed bootstrap intervals."""
    rows = []
    for (layer, metric), group in final_pair_scores(table).groupby(["layer", "metric"], sort=False):
        mean, low, high = t_interval(group["score"].to_numpy())
        boot_low, boot_high = seed_bootstrap_interval(group)
        rows.append({"layer": layer, "metric": metric, "mean": mean, "pair_t_low": low, "pair_t_high": high,
                     "seed_boot_low": boot_low, "seed_boot_high": boot_high,
                     "width_ratio": (boot_high - boot_low) / (high - low) if high > low else math.nan})
    return pd.DataFrame(rows)


def final_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return the in-distribution final score per layer and metric as ``mean [low, high]`` over seed pairs."""
    summary = summarize(table.loc[table["probe"] == ID])
    summary = summary.loc[~summary["metric"].str.contains("@", regex=False)]
    summary["cell"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
                       zip(summary["final_score"], summary["ci_low"], summary["ci_high"])]
    wide = summary.pivot_table(index="layer", columns="metric", values="cell", aggfunc="first")
    wide = wide.reindex(layer_order(table.loc[table["probe"] == ID]))
    return wide[[m for m in METRIC_LABELS if m in wide.columns]].reset_index()


def _s1_s2_sections(s1: pd.DataFrame, s2: pd.DataFrame) -> list[str]:
    """Return the S1 and S2 sections of ``summary.md`` as lines."""
    return [
        f"## S1: ratio to linear regression (holds at {int(s1['s1_holds'].sum())}/{len(s1)} layers)",
        _markdown(s1[["layer", "linear_regression", "procrustes", "procrustes_ratio", "procrustes_ratio_low",
                      "procrustes_ratio_high", "permutation_ratio", "soft_matching_ratio", "s1_holds"]]),
        "",
        f"## S2: soft matching vs pooled rotated null (p < {S2_ALPHA} at "
        f"{int(s2['s2_holds'].sum())}/{len(s2)} layers)",
        _markdown(s2, digits=4),
        "",
    ]


def analyze(run_dir: str | Path) -> Path:
    """Write the findings tables, ``summary.md`` and figures under ``run_dir/findings`` and return that folder."""
    run_dir = Path(run_dir)
    out = run_dir / "findings"
    out.mkdir(exist_ok=True)
    table = load_alignment(run_dir / "alignment.csv")
    stats_path = run_dir / "probe_stats.csv"
    probe_stats = pd.read_csv(stats_path, dtype={"probe": str, "seed": str}) if stats_path.is_file() else None

    final = final_table(table)
    s1 = s1_table(table)
    draws = pd.read_csv(run_dir / "null_draws.csv", dtype={"seed_a": str, "seed_b": str})
    s2 = pooled_null(draws)
    fractions, gains, accuracy = s3_table(table, probe_stats)
    drops, trends = s4_tables(table)
    severities = severity_table(drops)

    final.to_csv(out / "final_scores.csv", index=False)
    intervals = seed_bootstrap_table(table)
    intervals.to_csv(out / "final_intervals.csv", index=False)
    s1.to_csv(out / "s1_ratios.csv", index=False)
    s2.to_csv(out / "s2_null.csv", index=False)
    fractions.to_csv(out / "s3_fraction_epoch1.csv")
    gains.to_csv(out / "s3_gain_epoch1.csv")
    drops.to_csv(out / "s4_drops.csv", index=False)
    trends.to_csv(out / "s4_depth_trends.csv", index=False)
    severities.to_csv(out / "s4_severity.csv", index=False)

    plot_s1(s1, out / "s1_ratio.png")
    plot_s2(draws, s2, out / "s2_null.png")
    plot_s3(fractions, out / "s3_fraction.png")
    plot_s4(drops, out / "s4_drop.png")

    frac_values = fractions.to_numpy(dtype=float)
    graded = trends.dropna(subset=["severity"])
    lines = [
        f"# Findings summary: {run_dir}",
        "",
        "## Final in-distribution scores, mean [95% CI] over seed pairs",
        _markdown(final),
        "",
        "## 95% intervals of the final mean: t over pairs against a seed-level bootstrap",
        f"Median width ratio (bootstrap / t): {intervals['width_ratio'].median():.2f}.",
        _markdown(intervals),
        "",
        *_s1_s2_sections(s1, s2),
        f"## S3: fraction of final at end of epoch 1 (≥ {S3_FRACTION} in "
        f"{int((frac_values >= S3_FRACTION).sum())}/{int(np.isfinite(frac_values).sum())} layer × metric cells)",
        _markdown(fractions.reset_index()),
        "",
        "Share of the change from step 0 to the final step made by the end of epoch 1:",
        _markdown(gains.reset_index()),
        "",
        f"Probe accuracy (mean over seeds): {accuracy}",
        "",
        "## S4: depth trend of the drop (Spearman of drop vs depth), per probe set and metric",
        f"Positive in {int((trends['spearman_depth'] > 0).sum())}/{len(trends)} (probe set, metric) rows; "
        f"graded sets only: {int((graded['spearman_depth'] > 0).sum())}/{len(graded)}.",
        _markdown(trends),
        "",
        "## S4: drop by severity per family, metric and layer",
        f"Highest severity drop > lowest at {int(severities['grows'].sum())}/{len(severities)} rows.",
        _markdown(severities),
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))
    return out


def analyze_layers(out_dir: str | Path) -> Path:
    """Write ``summary.md`` for layers scored from saved weights: final scores, S1 ratios and the S2 null."""
    out_dir = Path(out_dir)
    scores = pd.read_csv(out_dir / "final_scores.csv", dtype={"seed_a": str, "seed_b": str})
    # Shape the pair scores like alignment.csv rows at one step so the S1 code applies unchanged.
    table = scores.assign(step=0, epoch=0.0, probe=ID)
    s1 = s1_table(table)
    cells = []
    for (layer, metric), group in table.groupby(["layer", "metric"], sort=False):
        mean, low, high = t_interval(group["score"].to_numpy())
        cells.append({"layer": layer, "metric": metric, "cell": f"{mean:.3f} [{low:.3f}, {high:.3f}]"})
    final = pd.DataFrame(cells).pivot(index="layer", columns="metric", values="cell")
    final = final.reindex(layer_order(table))[[m for m in METRIC_LABELS if m in final.columns]].reset_index()
    draws = pd.read_csv(out_dir / "null_draws.csv", dtype={"seed_a": str, "seed_b": str})
    s2 = pooled_null(draws)
    s1.to_csv(out_dir / "s1_ratios.csv", index=False)
    s2.to_csv(out_dir / "s2_null.csv", index=False)
    plot_s2(draws, s2, out_dir / "s2_null.png")
    lines = [
        f"# Layers scored from saved final weights: {out_dir}",
        "",
        "## Final scores, mean [95% CI] over seed pairs",
        _markdown(final),
        "",
        *_s1_s2_sections(s1, s2),
    ]
    (out_dir / "summary.md").write_text("\n".join(lines))
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the findings tables and figures of a findings run.")
    parser.add_argument("run_dir", type=Path)
    print(analyze(parser.parse_args().run_dir) / "summary.md")

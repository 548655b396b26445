"""Load the alignment table of a run and reduce it to per-step curves and a summary.

The training callback writes ``alignment.csv`` in tidy form: one row per
(step, epoch, probe, layer, metric, seed_a, seed_b) with the score of that
seed pair. Everything here is pure pandas so that tests can check values.
"""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

ALIGNMENT_COLUMNS = ("step", "epoch", "probe", "layer", "depth", "metric", "seed_a", "seed_b", "score")
KEY_COLUMNS = ("step", "probe", "layer", "metric", "seed_a", "seed_b")
PROBE_STATS_COLUMNS = ("step", "epoch", "probe", "seed", "accuracy")
ID_PROBE = "id"

# Display order of the metric families; metrics not listed follow in alphabetical order.
METRIC_ORDER = (
    "linear_regression",
    "procrustes",
    "procrustes_distance",
    "permutation",
    "soft_matching",
    "linear_cka",
    "debiased_cka",
    "rsa",
)

# Epochs are stored as step / steps per epoch, so the step that ends epoch 1 can
# come out as 1.0000000000000002 after rounding.
EPOCH_TOLERANCE = 1e-9

_SEVERITY_PATTERN = re.compile(r"^(?P<family>.+)-(?P<severity>\d+)$")


def prepare_alignment(table: pd.DataFrame, source: str = "alignment table") -> pd.DataFrame:
    """Validate an alignment table and return a copy with normalized dtypes.

    Seed labels become strings, so ``0`` and ``"0"`` name the same seed. NaN
    scores are kept: they are missing measurements, not zeros. When a key
    (step, probe, layer, metric, seed_a, seed_b) occurs more than once, as after
    a resumed run that rewrote some steps, the last row wins and a warning gives
    the count.

    Raises:
        ValueError: a required column is missing, the table is empty, a
            non-score column has nulls, or one layer has two depths.
    """
    missing = [column for column in ALIGNMENT_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(
            f"{source} is missing the columns {missing}; expected the columns {list(ALIGNMENT_COLUMNS)}, "
            f"found {list(table.columns)}"
        )
    if table.empty:
        raise ValueError(f"{source} has no rows; check that the run measured at least one step")

    prepared = table.loc[:, list(ALIGNMENT_COLUMNS)].copy()
    for column in ("step", "epoch", "probe", "layer", "depth", "metric", "seed_a", "seed_b"):
        if prepared[column].isna().any():
            first_bad = prepared.index[prepared[column].isna()][0]
            raise ValueError(f"{source} has an empty {column!r} at row {first_bad}; only 'score' may be NaN")

    prepared["step"] = prepared["step"].astype(np.int64)
    prepared["epoch"] = prepared["epoch"].astype(np.float64)
    prepared["depth"] = prepared["depth"].astype(np.int64)
    prepared["score"] = pd.to_numeric(prepared["score"], errors="coerce").astype(np.float64)
    for column in ("probe", "layer", "metric", "seed_a", "seed_b"):
        prepared[column] = prepared[column].astype(str)

    depths_per_layer = prepared.groupby("layer")["depth"].nunique()
    inconsistent = depths_per_layer[depths_per_layer > 1]
    if not inconsistent.empty:
        layer = inconsistent.index[0]
        depths = sorted(prepared.loc[prepared["layer"] == layer, "depth"].unique())
        raise ValueError(f"{source}: layer {layer!r} has several depths {depths}; each layer needs one depth")

    duplicated = prepared.duplicated(subset=list(KEY_COLUMNS), keep="last")
    if duplicated.any():
        logger.warning(
            "%s: %d rows repeat an earlier (step, probe, layer, metric, seed pair) key; keeping the last of each",
            source,
            int(duplicated.sum()),
        )
        prepared = prepared.loc[~duplicated]

    return prepared.reset_index(drop=True)


def load_alignment(path: str | Path) -> pd.DataFrame:
    """Read ``alignment.csv`` and validate it with :func:`prepare_alignment`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment table not found: {path}; the training callback writes it into the run directory")
    text = path.read_text()
    if text and not text.endswith("\n"):
        # A run killed while appending leaves a partial last line, whose values may be cut short.
        text = text[: text.rfind("\n") + 1]
        logger.warning("%s: dropped an incomplete last line (the run probably stopped while writing it)", path)
    table = pd.read_csv(io.StringIO(text), dtype={"probe": str, "layer": str, "metric": str, "seed_a": str,
                                                  "seed_b": str})
    return prepare_alignment(table, source=str(path))


def load_probe_stats(path: str | Path) -> pd.DataFrame | None:
    """Read ``probe_stats.csv`` (per-seed accuracy on each probe set), or return None if the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    probe_stats = pd.read_csv(path, dtype={"probe": str, "seed": str})
    missing = [column for column in PROBE_STATS_COLUMNS if column not in probe_stats.columns]
    if missing:
        raise ValueError(
            f"{path} is missing the columns {missing}; expected {list(PROBE_STATS_COLUMNS)} "
            f"and optionally 'frechet_distance', found {list(probe_stats.columns)}"
        )
    return probe_stats


def split_metric(name: str) -> tuple[str, str]:
    """Split a metric name into the base metric and its null variant.

    ``"soft_matching@rotated_p"`` gives ``("soft_matching", "rotated_p")`` and a
    native metric such as ``"procrustes"`` gives ``("procrustes", "")``.
    """
    base, _, variant = name.partition("@")
    return base, variant


def is_distance_metric(metric: str) -> bool:
    """Return whether lower values of the metric mean better alignment (its name contains ``distance``)."""
    return "distance" in split_metric(metric)[0]


def order_metrics(metrics) -> list[str]:
    """Sort metric names into the display order of :data:`METRIC_ORDER`."""
    rank = {name: index for index, name in enumerate(METRIC_ORDER)}
    return sorted(set(metrics), key=lambda name: (rank.get(name, len(rank)), name))


def native_metrics(table: pd.DataFrame) -> list[str]:
    """Return the metrics of the table that are not null baselines, in display order."""
    return order_metrics(name for name in table["metric"].unique() if not split_metric(name)[1])


def probe_severity(probe: str) -> tuple[str, int | None]:
    """Split a probe set name like ``gaussian_noise-3`` into family and severity; other names have no severity."""
    match = _SEVERITY_PATTERN.match(probe)
    if match is None:
        return probe, None
    return match["family"], int(match["severity"])


def layer_order(table: pd.DataFrame) -> list[str]:
    """Return the layers of the table sorted by depth along the forward pass."""
    depths = table.groupby("layer")["depth"].first()
    return list(depths.sort_values(kind="stable").index)


def steps_per_epoch(table: pd.DataFrame) -> float | None:
    """Estimate optimizer steps per epoch from step / epoch, or return None when no row has epoch > 0."""
    later = table.loc[table["epoch"] > 0, ["step", "epoch"]].drop_duplicates()
    if later.empty:
        return None
    return float(np.median(later["step"] / later["epoch"]))


def pair_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Reduce the seed pairs at each step to their mean, std, and counts of present and missing scores.

    Returns one row per (probe, layer, metric, step) with the columns depth,
    epoch, mean, std (sample std, NaN with fewer than two scores), n_pairs
    (non-missing scores) and n_missing (NaN scores). A step where every pair is
    NaN has mean NaN.
    """
    grouped = table.groupby(["probe", "layer", "metric", "step"], sort=True)
    curves = grouped.agg(
        depth=("depth", "first"),
        epoch=("epoch", "first"),
        mean=("score", "mean"),
        std=("score", "std"),
        n_pairs=("score", "count"),
        n_rows=("score", "size"),
    ).reset_index()
    curves["n_missing"] = curves.pop("n_rows") - curves["n_pairs"]
    return curves


def null_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Compare native scores with their null baselines at the last step that has null rows.

    Returns one row per (probe, layer, metric) that has at least one null
    variant, with the columns depth, null_step, native_mean and native_std
    (over seed pairs at null_step). Each variant V adds ``V_mean``, the mean
    over pairs of the null mean. A p-value variant, whose name ends in ``_p``,
    adds ``V_max`` instead: the largest p-value over pairs, so every pair has
    a p-value at or below it.
    """
    parts = table["metric"].str.partition("@")
    is_null = parts[2] != ""
    nulls = table.loc[is_null].assign(base=parts.loc[is_null, 0], variant=parts.loc[is_null, 2])
    if nulls.empty:
        return pd.DataFrame(columns=["probe", "layer", "depth", "metric", "null_step", "native_mean", "native_std"])

    # Keep only the last step with null rows of each probe, layer and base metric.
    last_null_step = nulls.groupby(["probe", "layer", "base"])["step"].transform("max")
    nulls = nulls.loc[nulls["step"] == last_null_step]

    keys = ["probe", "layer", "base", "step", "variant"]
    means = nulls.groupby(keys)["score"].mean()
    maxima = nulls.groupby(keys)["score"].max()
    is_p_value = means.index.get_level_values("variant").str.endswith("_p")
    values = means.where(~is_p_value, maxima).unstack("variant")
    values.columns = [f"{variant}_max" if variant.endswith("_p") else f"{variant}_mean" for variant in values.columns]
    values = values.reset_index().rename(columns={"base": "metric", "step": "null_step"})

    native_at_step = (
        table.loc[~is_null]
        .groupby(["probe", "layer", "metric", "step"])["score"]
        .agg(native_mean="mean", native_std="std")
        .reset_index()
        .rename(columns={"step": "null_step"})
    )
    comparison = values.merge(native_at_step, on=["probe", "layer", "metric", "null_step"], how="left")
    depths = table.groupby("layer")["depth"].first()
    comparison.insert(2, "depth", comparison["layer"].map(depths).astype(np.int64))
    leading = ["probe", "layer", "depth", "metric", "null_step", "native_mean", "native_std"]
    return comparison[leading + [column for column in comparison.columns if column not in leading]]


def summarize(
    table: pd.DataFrame,
    *,
    reach_fraction: float = 0.9,
    min_final_score: float = 0.0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Summarize each (probe, layer, native metric) of an alignment table.

    Definitions, per probe set, layer and metric (null baselines are excluded
    as rows and joined as columns, see below):

    - ``final_step``: the last step at which the group has rows.
    - ``final_score``: mean over seed pairs of the score at ``final_step``,
      ignoring NaN scores; NaN when every pair is NaN there. ``n_pairs`` counts
      the pairs that entered it and ``n_missing_final`` the NaN ones.
      ``n_missing`` counts NaN scores of the group over all steps.
    - ``final_std``: sample standard deviation (ddof=1) over those pairs; NaN
      with fewer than two pairs.
    - ``ci_low``, ``ci_high``: the two-sided ``confidence`` interval of the
      mean, ``final_score ± t(1 - (1 - confidence)/2, n_pairs - 1) *
      final_std / sqrt(n_pairs)``; NaN with fewer than two pairs. NOTE: the
      t interval assumes independent pairs, but pairs that share a seed are
      correlated, so it is narrower than an interval over independent seeds.
    - ``epoch1_step``: the last step with epoch ≤ 1; ``epoch1_score`` the mean
      over pairs there.
    - ``fraction_at_epoch1``: ``epoch1_score / final_score``. It can exceed 1
      when a score starts high or peaks before the end.
    - ``step_reach_NN`` (NN = 100 * reach_fraction, 90 by default): the first
      step whose mean over pairs is ≥ ``reach_fraction * final_score``. The
      score need not stay above that level afterwards. Steps whose mean is
      NaN never count as reached.

    The two ratios are NaN, and ``note`` gives the reason, when: the final score is
    NaN; the final score is ≤ ``min_final_score`` (a score near 0 is chance
    level and dividing by it yields a meaningless ratio); the metric is a
    distance (lower is better, so a fraction of the final value does not
    measure progress); no step has epoch ≤ 1; the last step has epoch < 1, so
    the run never reached the end of epoch 1; or the score at epoch1_step is
    NaN. In the last three cases only fraction_at_epoch1 is NaN.

    For metrics with null baselines, the columns of :func:`null_comparison`
    are joined: ``null_step``, ``rotated_mean``, ``rotated_p_max``,
    ``shuffled_mean``, ``shuffled_p_max`` (names follow the variants present).

    Returns one row per probe set, layer and metric, ordered by probe (the
    in-distribution probe first), depth and metric.
    """
    if not 0 < reach_fraction <= 1:
        raise ValueError(f"reach_fraction must be in (0, 1], got {reach_fraction}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    table = prepare_alignment(table)
    reach_column = f"step_reach_{round(reach_fraction * 100)}"
    native = table.loc[~table["metric"].str.contains("@", regex=False)]
    curves = pair_curves(native)

    group_keys = ["probe", "layer", "metric"]
    final_step_of_row = native.groupby(group_keys)["step"].transform("max")
    final_rows = native.loc[native["step"] == final_step_of_row]
    final_scores = {key: group["score"].to_numpy() for key, group in final_rows.groupby(group_keys)}

    rows = []
    for (probe, layer, metric), curve in curves.groupby(group_keys, sort=False):
        final_row = curve.iloc[-1]
        final_step = int(final_row["step"])
        row = {
            "probe": probe,
            "layer": layer,
            "depth": int(final_row["depth"]),
            "metric": metric,
            "final_step": final_step,
            **_final_statistics(final_scores[(probe, layer, metric)], confidence),
            "n_missing": int(curve["n_missing"].sum()),
        }
        row.update(_progress_statistics(curve, metric, row["final_score"], reach_fraction, min_final_score, reach_column))
        rows.append(row)

    summary = pd.DataFrame(rows)
    summary[reach_column] = summary[reach_column].astype("Int64")
    summary["epoch1_step"] = summary["epoch1_step"].astype("Int64")

    nulls = null_comparison(table)
    if not nulls.empty:
        nulls = nulls.drop(columns=["depth", "native_mean", "native_std"])
        summary = summary.merge(nulls, on=["probe", "layer", "metric"], how="left")
        summary["null_step"] = summary["null_step"].astype("Int64")

    return _sort_summary(summary)


def _final_statistics(scores: np.ndarray, confidence: float) -> dict:
    present = scores[~np.isnan(scores)]
    n_pairs = len(present)
    mean = float(present.mean()) if n_pairs else math.nan
    std = float(present.std(ddof=1)) if n_pairs >= 2 else math.nan
    if n_pairs >= 2:
        half_width = stats.t.ppf(1 - (1 - confidence) / 2, n_pairs - 1) * std / math.sqrt(n_pairs)
        ci_low, ci_high = mean - half_width, mean + half_width
    else:
        ci_low = ci_high = math.nan
    return {
        "final_score": mean,
        "final_std": std,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n_pairs": n_pairs,
        "n_missing_final": len(scores) - n_pairs,
    }


def _progress_statistics(
    curve: pd.DataFrame,
    metric: str,
    final_score: float,
    reach_fraction: float,
    min_final_score: float,
    reach_column: str,
) -> dict:
    early = curve.loc[curve["epoch"] <= 1 + EPOCH_TOLERANCE]
    epoch1_step = int(early["step"].iloc[-1]) if not early.empty else None
    epoch1_score = float(early["mean"].iloc[-1]) if not early.empty else math.nan
    result = {
        "epoch1_step": epoch1_step,
        "epoch1_score": epoch1_score,
        "fraction_at_epoch1": math.nan,
        reach_column: None,
        "note": "",
    }

    if math.isnan(final_score):
        result["note"] = "final score missing (every pair NaN)"
        return result
    if is_distance_metric(metric):
        result["note"] = "distance (lower is better): ratios not defined"
        return result
    if final_score <= min_final_score:
        result["note"] = f"final score <= {min_final_score:g}: ratios not defined"
        return result

    reached = curve.loc[curve["mean"] >= reach_fraction * final_score, "step"]
    result[reach_column] = int(reached.iloc[0])

    if epoch1_step is None:
        result["note"] = "no step with epoch <= 1"
    elif curve["epoch"].iloc[-1] < 1 - EPOCH_TOLERANCE:
        result["note"] = "run ends before the end of epoch 1"
    elif math.isnan(epoch1_score):
        result["note"] = f"score at step {epoch1_step} (end of epoch 1) missing"
    else:
        result["fraction_at_epoch1"] = epoch1_score / final_score
    return result


def _sort_summary(summary: pd.DataFrame) -> pd.DataFrame:
    metric_rank = {name: index for index, name in enumerate(order_metrics(summary["metric"]))}
    keys = pd.DataFrame(
        {
            "not_id": summary["probe"] != ID_PROBE,
            "probe": summary["probe"],
            "depth": summary["depth"],
            "metric_rank": summary["metric"].map(metric_rank),
        }
    )
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return summary.loc[order].reset_index(drop=True)


def shift_magnitudes(probe_stats: pd.DataFrame, id_probe: str = ID_PROBE) -> pd.DataFrame:
    """Measure each probe set's shift as the seeds' mean accuracy drop against the in-distribution probe.

    Uses the last step of ``probe_stats``. The drop is accuracy on ``id_probe``
    minus accuracy on the probe set, per seed, then averaged over seeds. It
    has the unit of the accuracy column (fraction or percent). ``frechet_distance`` (mean over seeds)
    is included when the column exists. Returns one row per probe set with
    the columns probe, step, accuracy, accuracy_drop and, if present,
    frechet_distance.
    """
    last_step = probe_stats["step"].max()
    final = probe_stats.loc[probe_stats["step"] == last_step]
    per_seed = final.set_index(["probe", "seed"])["accuracy"]
    if id_probe not in per_seed.index.get_level_values("probe"):
        raise ValueError(
            f"probe stats have no rows for the in-distribution probe {id_probe!r} at step {last_step}; "
            f"found probes {sorted(final['probe'].unique())}"
        )
    # Seeds as rows, probe sets as columns: the drop is the id column minus each column.
    accuracy = per_seed.unstack("probe")
    drop = accuracy.rsub(accuracy[id_probe], axis=0)

    columns = {"accuracy": ("accuracy", "mean")}
    if "frechet_distance" in final.columns:
        columns["frechet_distance"] = ("frechet_distance", "mean")
    magnitudes = final.groupby("probe").agg(**columns)
    magnitudes["accuracy_drop"] = drop.mean(axis=0)
    magnitudes.insert(0, "step", int(last_step))
    return magnitudes.reset_index()

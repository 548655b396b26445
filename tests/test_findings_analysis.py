import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

from findings_analysis import pooled_null, seed_bootstrap_interval, severity_table, t_interval  # noqa: E402


def _draws(observed_by_pair: dict, nulls_by_pair: dict, layer: str = "pre_logits") -> pd.DataFrame:
    rows = []
    for pair, observed in observed_by_pair.items():
        for draw, value in enumerate(nulls_by_pair[pair]):
            rows.append({"layer": layer, "depth": 0, "seed_a": pair[0], "seed_b": pair[1], "draw": draw,
                         "observed": observed, "null": value})
    return pd.DataFrame(rows)


def test_pooled_null_counts_all_pairs_draws():
    rng = np.random.default_rng(0)
    pairs = [("0", "1"), ("0", "2"), ("1", "2")]
    nulls = {pair: rng.uniform(0.0, 0.5, size=34) for pair in pairs}
    result = pooled_null(_draws({pair: 0.9 for pair in pairs}, nulls)).iloc[0]
    assert result["pooled_draws"] == 102
    assert result["p_mean"] == pytest.approx(1 / 103)
    assert result["p_pair_max"] == pytest.approx(1 / 103)
    assert bool(result["s2_holds"])


def test_pooled_null_p_pair_max_uses_worst_pair():
    pairs = [("0", "1"), ("0", "2")]
    nulls = {pair: np.linspace(0.0, 1.0, 10) for pair in pairs}
    # Pair (0, 2) scores 0.45: the 5 pooled draws per pair at 0.56 or above beat it, 10 in all.
    result = pooled_null(_draws({("0", "1"): 2.0, ("0", "2"): 0.45}, nulls)).iloc[0]
    pooled = np.concatenate(list(nulls.values()))
    assert result["p_pair_max"] == pytest.approx((1 + (pooled >= 0.45).sum()) / 21)
    assert result["p_mean"] == pytest.approx((1 + (pooled >= (2.0 + 0.45) / 2).sum()) / 21)
    assert not bool(result["s2_holds"])


def test_t_interval_contains_mean_and_ignores_nan():
    mean, low, high = t_interval(np.array([1.0, 2.0, 3.0, np.nan]))
    assert mean == pytest.approx(2.0)
    assert low < mean < high
    assert high - mean == pytest.approx(mean - low)


def test_seed_bootstrap_equal_scores_zero_width():
    pairs = pd.DataFrame({"seed_a": ["0", "0", "1"], "seed_b": ["1", "2", "2"], "score": [0.5, 0.5, 0.5]})
    low, high = seed_bootstrap_interval(pairs, draws=200)
    assert low == pytest.approx(0.5)
    assert high == pytest.approx(0.5)


def test_seed_bootstrap_covers_pair_mean():
    rng = np.random.default_rng(1)
    seeds = [str(s) for s in range(5)]
    rows = [{"seed_a": a, "seed_b": b, "score": rng.normal(0.7, 0.05)}
            for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    pairs = pd.DataFrame(rows)
    low, high = seed_bootstrap_interval(pairs, draws=500)
    assert low < pairs["score"].mean() < high


def test_severity_table_lowest_against_highest():
    # Severity 3 has the largest drop, so comparing severity 5 with it instead of severity 1 gives grows=False.
    drops = pd.DataFrame({
        "family": ["fog", "fog", "fog", "uci_digits"],
        "severity": pd.array([5, 1, 3, None], dtype="Int64"),
        "metric": "procrustes", "depth": 0, "layer": "pre_logits",
        "drop": [0.3, 0.1, 0.5, 0.9],
    })
    result = severity_table(drops)
    assert list(result.columns) == ["family", "metric", "depth", "layer", "severity_1", "severity_3", "severity_5",
                                    "grows"]
    assert list(result["family"]) == ["fog"]
    assert bool(result["grows"].iloc[0])

"""The core agrees with the reference stack in bench/reference.py (scikit-learn, scipy, POT)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from convergence_monitor.alignment import score_pairs

REFERENCE_PATH = Path(__file__).resolve().parents[1] / "bench" / "reference.py"
spec = importlib.util.spec_from_file_location("alignment_reference", REFERENCE_PATH)
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)

METRICS = ["linear_regression", "procrustes", "soft_matching", "linear_cka"]


def make_features(widths, n, seed):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 6))
    return {
        label: signal @ rng.standard_normal((6, width)) + rng.standard_normal((n, width))
        for label, width in enumerate(widths)
    }


def assert_pairs_equal(core, expected):
    assert core.keys() == expected.keys()
    for pair, scores in expected.items():
        for name, value in scores.items():
            assert core[pair][name] == pytest.approx(value, abs=1e-6), (pair, name)


def test_core_matches_reference_equal_widths():
    features = make_features((20, 20, 20), 120, seed=0)
    names = METRICS + ["permutation"]
    assert_pairs_equal(score_pairs(features, names), reference.reference_pairs(features, names))


def test_core_matches_reference_with_more_units_than_samples():
    # 24 training samples per fold for 30 units. Procrustes is left out: its
    # orthogonal map is not unique on the null space of a rank-deficient
    # cross-covariance, so two SVD implementations may disagree.
    features = make_features((30, 30), 30, seed=0)
    names = ["linear_regression", "soft_matching", "permutation", "linear_cka"]
    assert_pairs_equal(score_pairs(features, names), reference.reference_pairs(features, names))


def test_core_matches_reference_unequal_widths():
    features = make_features((12, 25, 18), 100, seed=1)
    assert_pairs_equal(score_pairs(features, METRICS, folds=4, seed=7), reference.reference_pairs(features, METRICS, folds=4, seed=7))


def test_reference_folds_match_core_folds():
    from convergence_monitor.alignment import make_folds

    for (core_train, core_test), (ref_train, ref_test) in zip(make_folds(53, 5, 2), reference.reference_folds(53, 5, 2)):
        assert np.array_equal(core_train, ref_train)
        assert np.array_equal(core_test, ref_test)

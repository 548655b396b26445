import numpy as np
import pytest
from _alignment_data import linear_pair, privileged_pair

from convergence_monitor.alignment import AlignmentInputError, haar_orthogonal, null_scores


def test_haar_matrix_is_orthogonal_and_seeded():
    first = haar_orthogonal(6, np.random.default_rng(0))
    again = haar_orthogonal(6, np.random.default_rng(0))
    assert np.allclose(first.T @ first, np.eye(6), atol=1e-12)
    assert np.array_equal(first, again)


def test_haar_sign_fix_gives_uniform_diagonal_signs():
    # Without the sign fix, QR's convention skews the diagonal of Q; with it,
    # each diagonal entry is positive about half of the time.
    rng = np.random.default_rng(1)
    positive = np.mean([haar_orthogonal(3, rng)[0, 0] > 0 for _ in range(2000)])
    assert 0.45 < positive < 0.55


def test_rotated_null_leaves_procrustes_distance_unchanged():
    rng = np.random.default_rng(2)
    X, Y = linear_pair(rng, 60, 5, 5)
    result = null_scores("procrustes_distance", X, Y, kind="rotated", draws=5)
    assert np.allclose(result.null, result.observed, atol=1e-7)


def test_rotated_null_lowers_soft_matching_of_privileged_basis():
    X, Y = privileged_pair(np.random.default_rng(3), 150, 8)
    result = null_scores("soft_matching", X, Y, kind="rotated", draws=19, folds=3)
    assert result.observed - result.null.max() > 0.2
    assert result.p_value == pytest.approx(1.0 / 20.0)


def test_shuffled_null_is_near_zero():
    rng = np.random.default_rng(4)
    X, Y = linear_pair(rng, 200, 4, 4, noise=0.1)
    result = null_scores("linear_cka", X, Y, kind="shuffled", draws=20)
    assert result.observed > 0.5
    assert np.abs(result.null).max() < 0.2
    assert result.p_value == pytest.approx(1.0 / 21.0)


def test_p_value_counts_ties_and_exceedances():
    # X against itself scores 1, and each rotation of a copy of X also scores 1
    # under CKA, so every null draw ties the observed value: p = 1.
    X = np.random.default_rng(5).standard_normal((30, 4))
    result = null_scores("linear_cka", X, X, kind="rotated", draws=9)
    assert np.all(np.isclose(result.null, result.observed))
    assert result.p_value == pytest.approx(1.0)


def test_distance_p_value_counts_null_below_observed():
    rng = np.random.default_rng(6)
    X, Y = linear_pair(rng, 100, 4, 4, noise=0.2)
    result = null_scores("procrustes_distance", X, Y, kind="shuffled", draws=9)
    assert not result.higher_is_better
    assert result.observed < result.null.min()
    assert result.p_value == pytest.approx(0.1)


def test_null_draws_are_deterministic():
    rng = np.random.default_rng(7)
    X, Y = linear_pair(rng, 60, 4, 4)
    first = null_scores("procrustes", X, Y, draws=4, seed=3, folds=3)
    second = null_scores("procrustes", X, Y, draws=4, seed=3, folds=3)
    assert np.array_equal(first.null, second.null)


def test_invalid_kind_and_draws():
    X = np.random.default_rng(8).standard_normal((30, 3))
    with pytest.raises(AlignmentInputError, match="null kind must be one of rotated, shuffled; found 'flipped'"):
        null_scores("linear_cka", X, X, kind="flipped")
    with pytest.raises(AlignmentInputError, match="draws must be a positive integer; found 0"):
        null_scores("linear_cka", X, X, draws=0)


def test_null_of_undefined_score_has_nan_p_value():
    X = np.ones((40, 6))
    Y = np.random.default_rng(0).standard_normal((40, 6))
    with pytest.warns(RuntimeWarning):
        result = null_scores("procrustes", X, Y, draws=3)
    assert np.isnan(result.observed)
    assert np.isnan(result.p_value)

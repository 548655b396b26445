import numpy as np
import pytest
from _alignment_data import low_rank, random_orthogonal
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from convergence_monitor.alignment import DeadUnitWarning, UndefinedScoreWarning, rsa_score


@pytest.mark.parametrize("widths", [(5, 5), (12, 4), (3, 30)])
def test_matches_scipy_spearman_of_pdist(widths):
    rng = np.random.default_rng(0)
    X, Y = low_rank(rng, 40, widths[0], noise=1.0), low_rank(rng, 40, widths[1], noise=1.0)
    expected = spearmanr(pdist(X, "correlation"), pdist(Y, "correlation")).statistic
    assert rsa_score(X, Y) == pytest.approx(expected, abs=1e-12)


def test_identity_scores_one_and_noise_near_zero():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 8))
    assert rsa_score(X, X) == pytest.approx(1.0, abs=1e-12)
    assert abs(rsa_score(X, rng.standard_normal((60, 8)))) < 0.1


@pytest.mark.parametrize("draw", range(3))
def test_invariant_to_unit_order_and_per_sample_affine(draw):
    rng = np.random.default_rng(10 + draw)
    X, Y = low_rank(rng, 40, 6), low_rank(rng, 40, 6, noise=1.0)
    reference = rsa_score(X, Y)
    per_sample = X * rng.uniform(0.5, 2.0, (40, 1)) + rng.normal(size=(40, 1))
    assert rsa_score(X[:, rng.permutation(6)], Y) == pytest.approx(reference, abs=1e-12)
    assert rsa_score(per_sample, Y) == pytest.approx(reference, abs=1e-12)


def test_changes_under_rotation_of_units():
    # Correlation distance centres each sample across units, which a rotation does not commute with.
    rng = np.random.default_rng(2)
    X, Y = low_rank(rng, 40, 6), low_rank(rng, 40, 6, noise=1.0)
    assert abs(rsa_score(X @ random_orthogonal(rng, 6), Y) - rsa_score(X, Y)) > 1e-3


def test_constant_sample_counts_as_uncorrelated_with_warning():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5))
    X[4] = 2.0
    with pytest.warns(DeadUnitWarning, match=r"1 of 30 samples of X have the same value in every unit"):
        value = rsa_score(X, Y)
    assert np.isfinite(value)


def test_all_dissimilarities_equal_returns_nan():
    rng = np.random.default_rng(4)
    # Every sample is a positive multiple plus a shift of one pattern, so every
    # correlation between samples is 1 although no unit is constant.
    X = rng.uniform(1.0, 2.0, (10, 1)) * np.arange(4.0) + rng.normal(size=(10, 1))
    Y = rng.standard_normal((10, 4))
    with pytest.warns(UndefinedScoreWarning, match="RSA score is undefined"):
        assert np.isnan(rsa_score(X, Y))

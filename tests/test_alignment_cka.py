import itertools

import numpy as np
import pytest
from _alignment_data import low_rank, random_orthogonal

from convergence_monitor.alignment import debiased_cka, linear_cka


def gram_linear_cka(X, Y):
    """Kornblith et al. (2019): tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with linear kernels."""
    n = X.shape[0]
    centring = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(A, B):
        return np.trace(A @ centring @ B @ centring)

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def brute_unbiased_hsic(K, L):
    """U-statistic of Song et al. (2012) summed over distinct index tuples.

    HSIC = E[k_ij l_ij] + E[k_ij] E[l_qr] − 2 E[k_ij l_iq], each expectation
    estimated by the mean over tuples of distinct indices.
    """
    n = K.shape[0]
    pairs = list(itertools.permutations(range(n), 2))
    triples = list(itertools.permutations(range(n), 3))
    quadruples = list(itertools.permutations(range(n), 4))
    first = np.mean([K[i, j] * L[i, j] for i, j in pairs])
    second = np.mean([K[i, j] * L[q, r] for i, j, q, r in quadruples])
    third = np.mean([K[i, j] * L[i, q] for i, j, q in triples])
    return first + second - 2.0 * third


def brute_debiased_cka(X, Y):
    K, L = X @ X.T, Y @ Y.T
    return brute_unbiased_hsic(K, L) / np.sqrt(brute_unbiased_hsic(K, K) * brute_unbiased_hsic(L, L))


@pytest.mark.parametrize("shape", [(50, 6, 9), (30, 40, 45), (20, 3, 60)])
def test_linear_cka_matches_gram_formula(shape):
    n, p, q = shape  # the last two cases take the n × n Gram route inside linear_cka
    rng = np.random.default_rng(0)
    X, Y = low_rank(rng, n, p) + 3.0, low_rank(rng, n, q)
    assert linear_cka(X, Y) == pytest.approx(gram_linear_cka(X, Y), abs=1e-12)


@pytest.mark.parametrize("n", [6, 7])
def test_debiased_cka_matches_brute_force_u_statistic(n):
    rng = np.random.default_rng(n)
    # Uncentred inputs: the estimator must be translation invariant for the
    # centred computation to agree with the U-statistic on raw data.
    X = rng.standard_normal((n, 3)) + 5.0
    Y = X @ rng.standard_normal((3, 4)) + rng.standard_normal((n, 4)) - 2.0
    assert debiased_cka(X, Y) == pytest.approx(brute_debiased_cka(X, Y), abs=1e-10)


def test_debiased_cka_wide_inputs_match_brute_force():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((7, 20)), rng.standard_normal((7, 30))
    assert debiased_cka(X, Y) == pytest.approx(brute_debiased_cka(X, Y), abs=1e-10)


def test_debiased_cka_can_be_negative_on_noise():
    rng = np.random.default_rng(2)
    values = [debiased_cka(rng.standard_normal((30, 5)), rng.standard_normal((30, 5))) for _ in range(10)]
    assert min(values) < 0.0
    assert abs(np.mean(values)) < 0.05


def test_debiased_cka_unbiased_on_wide_noise():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((50, 400)), rng.standard_normal((50, 400))
    assert linear_cka(X, Y) > 0.5
    assert abs(debiased_cka(X, Y)) < 0.05


def test_identity_scores_one():
    X = low_rank(np.random.default_rng(4), 60, 8)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert debiased_cka(X, X) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("draw", range(4))
def test_invariant_to_rotation_isotropic_scale_and_shift(draw):
    rng = np.random.default_rng(10 + draw)
    X, Y = low_rank(rng, 60, 7), low_rank(rng, 60, 9, noise=1.0)
    transformed = 0.01 * X @ random_orthogonal(rng, 7) + rng.normal(size=7)
    for metric in (linear_cka, debiased_cka):
        assert metric(transformed, Y) == pytest.approx(metric(X, Y), abs=1e-10)
        assert metric(X, 50.0 * Y @ random_orthogonal(rng, 9)) == pytest.approx(metric(X, Y), abs=1e-10)


def test_changes_under_non_isotropic_scaling():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((100, 6))
    Y = X + 0.5 * rng.standard_normal((100, 6))
    stretched = X * np.array([20.0, 1.0, 1.0, 1.0, 1.0, 0.05])
    for metric in (linear_cka, debiased_cka):
        assert abs(metric(stretched, Y) - metric(X, Y)) > 0.05

import numpy as np
import pytest
from _alignment_data import linear_pair, low_rank, random_orthogonal
from scipy.linalg import orthogonal_procrustes
from scipy.stats import pearsonr

from convergence_monitor.alignment import make_folds, procrustes_distance, procrustes_score


def scipy_procrustes_score(X, Y, folds=5, seed=0):
    """Symmetric held-out Procrustes score built on scipy's orthogonal_procrustes."""
    p, q = X.shape[1], Y.shape[1]
    width = max(p, q)

    def pad(block):
        return np.hstack([block, np.zeros((block.shape[0], width - block.shape[1]))])

    scores = []
    for training, held_out in make_folds(X.shape[0], folds, seed):
        x_mean, y_mean = X[training].mean(0), Y[training].mean(0)
        x_train, y_train = pad(X[training] - x_mean), pad(Y[training] - y_mean)
        x_test, y_test = pad(X[held_out] - x_mean), pad(Y[held_out] - y_mean)
        rotation, _ = orthogonal_procrustes(x_train, y_train)
        forward = pearsonr((x_test @ rotation)[:, :q], y_test[:, :q], axis=0).statistic.mean()
        backward = pearsonr((y_test @ rotation.T)[:, :p], x_test[:, :p], axis=0).statistic.mean()
        scores.append(0.5 * (forward + backward))
    return float(np.mean(scores))


@pytest.mark.parametrize("kind", ["random", "linear", "rotated", "low_rank_unequal"])
def test_matches_scipy_orthogonal_procrustes(kind):
    rng = np.random.default_rng(0)
    if kind == "random":
        X, Y = rng.standard_normal((100, 7)), rng.standard_normal((100, 7))
    elif kind == "linear":
        X, Y = linear_pair(rng, 100, 7, 7)
    elif kind == "rotated":
        X = low_rank(rng, 100, 7)
        Y = X @ random_orthogonal(rng, 7) + 0.2 * rng.standard_normal((100, 7))
    else:
        X, Y = low_rank(rng, 100, 12), low_rank(rng, 100, 7)
    assert procrustes_score(X, Y) == pytest.approx(scipy_procrustes_score(X, Y), abs=1e-12)


def test_identical_and_rotated_copies_score_one():
    rng = np.random.default_rng(1)
    X = low_rank(rng, 120, 9)
    assert procrustes_score(X, X) == pytest.approx(1.0, abs=1e-12)
    assert procrustes_score(X, X @ random_orthogonal(rng, 9)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("draw", range(4))
def test_directional_score_invariant_to_rotating_source(draw):
    rng = np.random.default_rng(10 + draw)
    X, Y = linear_pair(rng, 120, 6, 6, noise=1.0)
    reference = procrustes_score(X, Y, symmetric=False)
    reflection = np.diag(rng.choice([-1.0, 1.0], 6))
    rotated = X @ random_orthogonal(rng, 6) @ reflection
    assert procrustes_score(rotated, Y, symmetric=False) == pytest.approx(reference, abs=1e-10)


@pytest.mark.parametrize("draw", range(4))
def test_symmetric_score_invariant_to_signed_permutations(draw):
    rng = np.random.default_rng(20 + draw)
    X, Y = linear_pair(rng, 120, 6, 6, noise=1.0)
    reference = procrustes_score(X, Y)
    signed_x = np.eye(6)[rng.permutation(6)] * rng.choice([-1.0, 1.0], 6)
    signed_y = np.eye(6)[rng.permutation(6)] * rng.choice([-1.0, 1.0], 6)
    assert procrustes_score(X @ signed_x, Y @ signed_y) == pytest.approx(reference, abs=1e-10)


def test_rotating_target_moves_per_unit_score():
    # The per-unit correlation is measured in the target's basis, so only the map,
    # not the score, ignores a rotation of the target.
    rng = np.random.default_rng(30)
    X, Y = linear_pair(rng, 120, 6, 6, noise=1.0)
    rotated_target = procrustes_score(X, Y @ random_orthogonal(rng, 6), symmetric=False)
    assert abs(rotated_target - procrustes_score(X, Y, symmetric=False)) > 1e-3


@pytest.mark.parametrize("draw", range(3))
def test_distance_invariant_to_rotating_either_side(draw):
    rng = np.random.default_rng(40 + draw)
    X, Y = linear_pair(rng, 100, 5, 7, noise=1.0)
    reference = procrustes_distance(X, Y)
    assert procrustes_distance(X @ random_orthogonal(rng, 5), Y) == pytest.approx(reference, abs=1e-10)
    assert procrustes_distance(X, 2.0 * Y @ random_orthogonal(rng, 7)) == pytest.approx(reference, abs=1e-10)


def test_changes_under_non_isotropic_scaling():
    rng = np.random.default_rng(2)
    X, Y = linear_pair(rng, 200, 6, 6, noise=1.0)
    stretched = X * np.array([10.0, 1.0, 1.0, 0.1, 1.0, 1.0])
    assert abs(procrustes_score(stretched, Y) - procrustes_score(X, Y)) > 0.01


def test_unrelated_inputs_score_near_zero():
    rng = np.random.default_rng(3)
    assert abs(procrustes_score(rng.standard_normal((400, 8)), rng.standard_normal((400, 8)))) < 0.1


def brute_distance(X, Y):
    x, y = X - X.mean(0), Y - Y.mean(0)
    nuclear = np.linalg.svd(x.T @ y, compute_uv=False).sum()
    return np.arccos(np.clip(nuclear / (np.linalg.norm(x) * np.linalg.norm(y)), -1.0, 1.0))


def test_distance_matches_formula_with_unequal_widths():
    rng = np.random.default_rng(4)
    X, Y = low_rank(rng, 80, 10), low_rank(rng, 80, 4)
    assert procrustes_distance(X, Y) == pytest.approx(brute_distance(X, Y), abs=1e-12)
    assert 0.0 <= procrustes_distance(X, Y) <= np.pi / 2


def test_distance_is_zero_for_similarity_transforms():
    rng = np.random.default_rng(5)
    X = low_rank(rng, 80, 6)
    transformed = 3.0 * X @ random_orthogonal(rng, 6) + 7.0
    # Clipping keeps a cosine of 1 + 1e-16 from becoming NaN. Near 1, arccos
    # turns a rounding error of 1e-16 in the cosine into an angle of about 1.5e-8.
    assert procrustes_distance(X, X) < 1e-7
    assert procrustes_distance(X, transformed) < 1e-7


def test_distance_of_independent_inputs_is_large():
    rng = np.random.default_rng(6)
    assert procrustes_distance(rng.standard_normal((500, 5)), rng.standard_normal((500, 5))) > 1.0

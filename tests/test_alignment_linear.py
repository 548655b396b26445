import numpy as np
import pytest
from _alignment_data import linear_pair, low_rank, random_orthogonal
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from convergence_monitor.alignment import linear_regression_score, make_folds


def sklearn_fixed_penalty(X, Y, relative_alpha, folds=5, seed=0):
    """Symmetric ridge score with scikit-learn at one penalty, refitted on each training fold."""

    def direction(source, target, training, held_out):
        scaler = StandardScaler().fit(source[training])
        source_train = scaler.transform(source[training])
        target_train = StandardScaler().fit_transform(target[training])
        # The penalty is relative to the mean eigenvalue tr(ZᵀZ)/p of the standardized training Gram matrix.
        alpha = relative_alpha * np.sum(source_train**2) / source.shape[1]
        model = Ridge(alpha=alpha).fit(source_train, target_train)
        predicted = model.predict(scaler.transform(source[held_out]))
        return pearsonr(predicted, target[held_out], axis=0).statistic.mean()

    scores = []
    for training, held_out in make_folds(X.shape[0], folds, seed):
        forward = direction(X, Y, training, held_out)
        backward = direction(Y, X, training, held_out)
        scores.append(0.5 * (forward + backward))
    return float(np.mean(scores))


@pytest.mark.parametrize("relative_alpha", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("kind", ["random", "linear", "low_rank"])
def test_matches_sklearn_ridge_at_fixed_penalty(kind, relative_alpha):
    rng = np.random.default_rng(1)
    if kind == "random":
        X, Y = rng.standard_normal((120, 8)), rng.standard_normal((120, 11))
    elif kind == "linear":
        X, Y = linear_pair(rng, 120, 8, 11)
    else:
        X, Y = low_rank(rng, 120, 30), low_rank(rng, 120, 20)
    expected = sklearn_fixed_penalty(X, Y, relative_alpha)
    assert linear_regression_score(X, Y, alphas=[relative_alpha]) == pytest.approx(expected, abs=1e-9)


def test_independent_noise_scores_near_zero_with_wide_layers():
    rng = np.random.default_rng(2)
    n, width = 200, 150  # 160 training samples per fold for 150 units
    X, Y = rng.standard_normal((n, width)), rng.standard_normal((n, width))
    assert abs(linear_regression_score(X, Y)) < 0.1


def test_in_sample_fit_of_noise_would_leak():
    # The same noise scored on the fitting samples gives a large positive number,
    # so the near-zero held-out score above is not an artefact of the data.
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((200, 150)), rng.standard_normal((200, 150))
    fitted = Ridge(alpha=1e-3).fit(X, Y).predict(X)
    in_sample = pearsonr(fitted, Y, axis=0).statistic.mean()
    assert in_sample > 0.5


def test_identical_inputs_score_one():
    X = low_rank(np.random.default_rng(3), 200, 12, noise=0.1)
    assert linear_regression_score(X, X) == pytest.approx(1.0, abs=1e-6)


def test_linear_relation_scores_high_and_noise_low():
    rng = np.random.default_rng(4)
    X, Y = linear_pair(rng, 300, 10, 10, noise=0.1)
    assert linear_regression_score(X, Y) > 0.95
    assert abs(linear_regression_score(X, rng.standard_normal((300, 10)))) < 0.1


@pytest.mark.parametrize("draw", range(3))
def test_invariant_to_per_unit_affine_maps(draw):
    # Each unit is z-scored on the training fold, so a per-unit scale (of either
    # sign) and shift cancel up to rounding.
    rng = np.random.default_rng(10 + draw)
    X, Y = linear_pair(rng, 150, 6, 9)
    scale = rng.uniform(0.1, 10.0, 6) * rng.choice([-1.0, 1.0], 6)
    shift = rng.normal(0.0, 100.0, 6)
    assert linear_regression_score(X * scale + shift, Y) == pytest.approx(linear_regression_score(X, Y), abs=1e-10)


@pytest.mark.parametrize("draw", range(3))
def test_nearly_invariant_to_well_conditioned_linear_maps(draw):
    # Ridge is exactly invariant to an invertible map of the source only without
    # a penalty. With a strong signal GCV selects a small penalty, and a map with
    # condition number 2 then moves the X → Y score by far less than 1e-3.
    rng = np.random.default_rng(20 + draw)
    X, Y = linear_pair(rng, 300, 8, 8, noise=0.5)
    mixing = random_orthogonal(rng, 8) @ np.diag(np.linspace(1.0, 2.0, 8)) @ random_orthogonal(rng, 8)
    shift = rng.normal(0.0, 5.0, 8)
    original = linear_regression_score(X, Y, symmetric=False)
    mapped = linear_regression_score(X @ mixing + shift, Y, symmetric=False)
    assert mapped == pytest.approx(original, abs=1e-3)


def test_changes_when_target_is_replaced_by_noise():
    rng = np.random.default_rng(5)
    X, Y = linear_pair(rng, 200, 6, 6, noise=0.2)
    assert linear_regression_score(X, Y) - linear_regression_score(X, rng.permutation(Y)) > 0.5


def test_symmetric_is_mean_of_directions():
    rng = np.random.default_rng(6)
    X, Y = linear_pair(rng, 150, 5, 9)
    forward = linear_regression_score(X, Y, symmetric=False)
    backward = linear_regression_score(Y, X, symmetric=False)
    assert linear_regression_score(X, Y) == pytest.approx(0.5 * (forward + backward), abs=1e-12)

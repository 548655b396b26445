import warnings

import numpy as np
import pytest
import torch
from _alignment_data import low_rank

from convergence_monitor.alignment import (
    METRICS,
    DeadUnitWarning,
    UndefinedScoreWarning,
    linear_regression_score,
    list_metrics,
    permutation_score,
    procrustes_score,
    score,
    score_pairs,
    soft_matching_score,
)

RNG = np.random.default_rng(0)
X = low_rank(RNG, 150, 10, noise=0.5)
Y = low_rank(RNG, 150, 10, noise=0.5)
EXPECTED = {name: score(name, X, Y) for name in list_metrics()}

# The dead-unit tests match one warning each; the other folds warn too.
pytestmark = pytest.mark.filterwarnings("ignore::convergence_monitor.alignment.DeadUnitWarning")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", list_metrics())
def test_low_precision_tensors_give_float64_answer(name, dtype):
    x, y = torch.tensor(X).to(dtype), torch.tensor(Y).to(dtype)
    value = score(name, x, y)
    # The rounded values themselves are scored exactly in float64.
    assert value == score(name, x.double().numpy(), y.double().numpy())
    # Rounding the inputs (relative error up to 2**-9 for bfloat16) moves the
    # scores of these 150 × 10 inputs by at most a few 1e-4.
    assert value == pytest.approx(EXPECTED[name], abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list_metrics())
def test_gpu_tensors_are_accepted(name):
    x, y = torch.tensor(X, device="cuda").half(), torch.tensor(Y, device="cuda").half()
    assert score(name, x, y) == score(name, x.cpu().double().numpy(), y.cpu().double().numpy())


@pytest.mark.parametrize("name", list_metrics())
def test_tiny_scale_activations_match_unit_scale(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 1e-4 scale must not be mistaken for dead units
        value = score(name, 1e-4 * X, 1e-4 * Y)
    assert np.isfinite(value)
    assert value == pytest.approx(EXPECTED[name], abs=1e-9)


@pytest.mark.parametrize("name", list_metrics())
def test_repeated_calls_are_bitwise_identical(name):
    assert score(name, X, Y) == score(name, X, Y)
    assert score(name, X, Y) == EXPECTED[name]


def with_dead_unit(data, column, value=3.0):
    data = data.copy()
    data[:, column] = value
    return data


def test_dead_unit_warns_with_count_fold_and_side():
    dead = with_dead_unit(X, 4)
    with pytest.warns(DeadUnitWarning, match=r"fold 1 of 5: 1 of 10 units of X are constant on the training samples \(first indices \[4\]\)"):
        procrustes_score(dead, Y)


def test_dead_unit_counts_as_zero_correlation():
    # Against itself, every live unit matches with correlation 1 and the dead
    # one counts as 0, so matching scores are exactly (p − 1) / p.
    dead = with_dead_unit(X, 4)
    with pytest.warns(DeadUnitWarning):
        assert permutation_score(dead, dead) == pytest.approx(0.9, abs=1e-12)
    with pytest.warns(DeadUnitWarning):
        assert soft_matching_score(dead, dead) == pytest.approx(0.9, abs=1e-12)
    with pytest.warns(DeadUnitWarning):
        assert procrustes_score(dead, dead) == pytest.approx(0.9, abs=1e-12)
    with pytest.warns(DeadUnitWarning):
        assert linear_regression_score(dead, dead) == pytest.approx(0.9, abs=1e-6)


def test_held_out_dead_unit_warns():
    from convergence_monitor.alignment import make_folds

    _, held_out = make_folds(150, 5, 0)[2]
    sparse = X.copy()
    sparse[held_out, 7] = 0.0
    with pytest.warns(DeadUnitWarning, match=r"fold 3 of 5: 1 of 10 units of X are constant on the held-out samples"):
        value = permutation_score(sparse, Y)
    assert np.isfinite(value)


def test_training_dead_unit_scores_zero_on_held_out():
    from convergence_monitor.alignment import make_folds

    # Unit 7 varies only on the held-out samples of fold 1: dead on that
    # fold's training samples, and dead on every other fold's held-out samples.
    _, held_out = make_folds(150, 5, 0)[0]
    sparse = X.copy()
    sparse[:, 7] = 0.0
    sparse[held_out, 7] = np.random.default_rng(1).standard_normal(held_out.size)
    assert permutation_score(sparse, sparse) == pytest.approx(0.9, abs=1e-12)
    assert soft_matching_score(sparse, sparse) == pytest.approx(0.9, abs=1e-12)


@pytest.mark.parametrize("name", list_metrics())
def test_all_constant_side_returns_nan_with_warning(name):
    constant = np.full_like(X, 2.5)
    with pytest.warns(UndefinedScoreWarning, match=f"every unit of X is constant.*{name} returned NaN"):
        assert np.isnan(score(name, constant, Y))


def test_score_pairs_names_seed_in_dead_unit_warning():
    features = {0: X, 1: with_dead_unit(Y, 2)}
    with pytest.warns(DeadUnitWarning, match=r"^layer 'fc': fold 1 of 5: 1 of 10 units of seed 1 are constant"):
        score_pairs(features, ["procrustes"], context="layer 'fc'")


def test_no_live_unit_on_fold_gives_nan():
    from convergence_monitor.alignment import make_folds

    # On fold 1, unit 0 is dead on the training samples and unit 1 on the
    # held-out samples, so no unit has a defined correlation there.
    _, held_out = make_folds(150, 5, 0)[0]
    rng = np.random.default_rng(2)
    split = np.zeros((150, 2))
    split[held_out, 0] = rng.standard_normal(held_out.size)
    split[:, 1] = rng.standard_normal(150)
    split[held_out, 1] = 0.0
    with pytest.warns(UndefinedScoreWarning, match="fold 1 of 5"):
        assert np.isnan(permutation_score(split, Y[:, :2]))


@pytest.mark.parametrize("name", list(METRICS))
@pytest.mark.parametrize("factor", [1e-300, 1e-150, 1e150, 1e300])
def test_extreme_magnitudes_score_unchanged(name, factor):
    # Squares of 1e-300 underflow and squares of 1e300 overflow; neither may read as a constant
    # unit, an infinite variance or a zero score.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert score(name, X * factor, Y) == pytest.approx(score(name, X, Y), rel=1e-12, abs=1e-14)
        assert score(name, X, Y * factor) == pytest.approx(score(name, X, Y), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", list(METRICS))
def test_power_of_two_scale_bitwise_equal(name):
    assert score(name, X * 2.0**-600, Y * 2.0**40) == score(name, X, Y)

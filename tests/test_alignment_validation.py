import numpy as np
import pytest
import torch

from convergence_monitor.alignment import (
    AlignmentInputError,
    debiased_cka,
    linear_cka,
    linear_regression_score,
    permutation_score,
    procrustes_score,
    rsa_score,
    score,
    score_pairs,
    soft_matching_score,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 6))
Y = RNG.standard_normal((40, 6))


def test_nan_reports_count_and_first_position():
    bad = X.copy()
    bad[3, 2] = np.nan
    bad[7, 1] = np.nan
    with pytest.raises(AlignmentInputError, match=r"X .*found 2 NaN or infinite values, the first at row 3, column 2"):
        procrustes_score(bad, Y)


def test_inf_in_y_is_rejected():
    bad = Y.copy()
    bad[0, 5] = np.inf
    with pytest.raises(ValueError, match=r"Y must contain only finite values; found 1 .* row 0, column 5 \(inf\)"):
        linear_cka(X, bad)


def test_nan_in_torch_tensor_is_rejected():
    bad = torch.tensor(X, dtype=torch.float16)
    bad[1, 1] = float("nan")
    with pytest.raises(AlignmentInputError, match="row 1, column 1"):
        permutation_score(bad, Y)


@pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max,
                    reason="long double is float64 on this platform")
def test_long_double_overflow_rejected():
    bad = X.astype(np.longdouble)
    bad[2, 4] = np.longdouble("1e400")
    with pytest.raises(AlignmentInputError, match=r"row 2, column 4 \(inf\)"):
        procrustes_score(bad, Y)


def test_mismatched_sample_counts():
    with pytest.raises(AlignmentInputError, match=r"same number of samples .*X: 40, Y: 39"):
        soft_matching_score(X, Y[:39])


@pytest.mark.parametrize("shape", [(40,), (40, 6, 2)])
def test_not_two_dimensional(shape):
    with pytest.raises(AlignmentInputError, match=r"X must be a 2-D array of samples × units; found \d dimensions"):
        linear_cka(np.zeros(shape), Y)


def test_empty_units_rejected():
    with pytest.raises(AlignmentInputError, match=r"at least one sample and one unit; found shape \(40, 0\)"):
        linear_cka(np.zeros((40, 0)), Y)


def test_complex_dtype_rejected():
    with pytest.raises(AlignmentInputError, match="real numeric array; found dtype complex128"):
        linear_cka(X.astype(complex), Y)


def test_too_few_samples_for_folds():
    with pytest.raises(AlignmentInputError, match=r"at least 15 samples; found 12"):
        linear_regression_score(X[:12], Y[:12], folds=5)


def test_folds_must_be_at_least_two():
    with pytest.raises(AlignmentInputError, match=r"folds must be an integer of at least 2; found 1"):
        procrustes_score(X, Y, folds=1)


def test_negative_fold_seed_is_named():
    with pytest.raises(AlignmentInputError, match=r"seed must be a non-negative integer; found -1"):
        procrustes_score(X, Y, seed=-1)


def test_non_numeric_alphas_are_named():
    with pytest.raises(AlignmentInputError, match=r"alphas must be a sequence of positive numbers; found 'abc'"):
        linear_regression_score(X, Y, alphas="abc")


@pytest.mark.parametrize("value", ["no", 0, None])
def test_symmetric_must_be_a_bool(value):
    with pytest.raises(AlignmentInputError, match=r"symmetric must be True or False"):
        procrustes_score(X, Y, symmetric=value)
    with pytest.raises(AlignmentInputError, match=r"symmetric must be True or False"):
        linear_regression_score(X, Y, symmetric=value)


def test_debiased_cka_needs_four_samples():
    with pytest.raises(AlignmentInputError, match=r"at least 4 samples; found 3"):
        debiased_cka(X[:3], Y[:3])


def test_permutation_unequal_widths_points_to_soft_matching():
    with pytest.raises(AlignmentInputError, match=r"X: 6, Y: 5\. Use soft_matching_score"):
        permutation_score(X, Y[:, :5])


def test_rsa_needs_two_units():
    with pytest.raises(AlignmentInputError, match=r"at least 2 units per sample to correlate samples; found X: 1"):
        rsa_score(X[:, :1], Y)


@pytest.mark.parametrize("alphas", [[], [0.0], [-1.0], [np.inf]])
def test_invalid_alphas(alphas):
    with pytest.raises(AlignmentInputError, match="alphas must be"):
        linear_regression_score(X, Y, alphas=alphas)


def test_context_prefixes_message():
    with pytest.raises(AlignmentInputError, match=r"^layer 'fc', seeds 0 vs 1: X and Y|^layer 'fc', seeds 0 vs 1: every input"):
        procrustes_score(X, Y[:30], context="layer 'fc', seeds 0 vs 1")


def test_score_pairs_context_and_seed_names():
    features = {0: X, 1: Y[:30]}
    with pytest.raises(AlignmentInputError, match=r"^layer 'layer1\.0\.conv1': .*seed 0: 40, seed 1: 30"):
        score_pairs(features, ["procrustes"], context="layer 'layer1.0.conv1'")


def test_unknown_metric_lists_accepted_names():
    with pytest.raises(ValueError, match=r"unknown alignment metric 'cca'; expected one of linear_regression, .*rsa"):
        score("cca", X, Y)


def test_unknown_option_lists_accepted_options():
    with pytest.raises(ValueError, match=r"does not take options \['folds'\]"):
        score("linear_cka", X, Y, folds=3)

"""Reference implementation of the alignment metrics, one pair at a time.

Built directly from scikit-learn (StandardScaler, Ridge), scipy
(orthogonal_procrustes, linear_sum_assignment, pearsonr) and POT (ot.emd)
with no code shared with ``convergence_monitor.alignment``. It follows the
same definitions: the same folds, ridge on z-scored features with the same
relative penalty grid and the same GCV selection rule, the same Procrustes
padding and the same matching rules. The benchmark times it against the
core, and tests/test_alignment_reference.py checks that both agree.

It does not handle dead units (StandardScaler leaves a constant column at
scale 1), so use it only on data without constant units.
"""

from __future__ import annotations

import itertools

import numpy as np
import ot
from scipy.linalg import orthogonal_procrustes
from scipy.optimize import linear_sum_assignment
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

RELATIVE_ALPHAS = 10.0 ** np.linspace(-6.0, 5.0, 23)


def reference_folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (training, held-out) index pairs: a seeded permutation cut into nearly equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    splits = []
    for k, held_out in enumerate(parts):
        training = np.concatenate([part for j, part in enumerate(parts) if j != k])
        splits.append((np.sort(training), np.sort(held_out)))
    return splits


def _ridge_direction(source_train, target_train, source_test, target_test, relative_alphas):
    source_scaler = StandardScaler().fit(source_train)
    source_z = source_scaler.transform(source_train)
    target_z = StandardScaler().fit_transform(target_train)
    m, p = source_z.shape
    q = target_z.shape[1]

    # Degrees of freedom of the ridge smoother, plus one for the intercept.
    eigenvalues = np.linalg.eigvalsh(source_z.T @ source_z)
    alphas = relative_alphas * np.sum(source_z**2) / p

    gcv = []
    for alpha in alphas:
        model = Ridge(alpha=alpha, fit_intercept=True).fit(source_z, target_z)
        residual_sum = np.sum((target_z - model.predict(source_z)) ** 2)
        dof_left = 1.0 - (1.0 + np.sum(eigenvalues / (eigenvalues + alpha))) / m
        gcv.append(residual_sum / (m * q * dof_left**2) if dof_left > 1e-12 else np.inf)
    best = alphas[int(np.argmin(gcv))]

    model = Ridge(alpha=best, fit_intercept=True).fit(source_z, target_z)
    predicted = model.predict(source_scaler.transform(source_test))
    return float(np.mean(pearsonr(predicted, target_test, axis=0).statistic))


def linear_regression_reference(X, Y, folds=5, seed=0, alphas=None, symmetric=True):
    """Cross-validated ridge score with the penalty chosen by GCV per training fold."""
    relative_alphas = RELATIVE_ALPHAS if alphas is None else np.asarray(alphas, dtype=float)
    fold_scores = []
    for training, held_out in reference_folds(X.shape[0], folds, seed):
        forward = _ridge_direction(X[training], Y[training], X[held_out], Y[held_out], relative_alphas)
        if symmetric:
            backward = _ridge_direction(Y[training], X[training], Y[held_out], X[held_out], relative_alphas)
            fold_scores.append(0.5 * (forward + backward))
        else:
            fold_scores.append(forward)
    return float(np.mean(fold_scores))


def _padded(block, width):
    return np.hstack([block, np.zeros((block.shape[0], width - block.shape[1]))])


def procrustes_reference(X, Y, folds=5, seed=0):
    """Cross-validated symmetric orthogonal Procrustes score (scipy orthogonal_procrustes)."""
    p, q = X.shape[1], Y.shape[1]
    width = max(p, q)
    fold_scores = []
    for training, held_out in reference_folds(X.shape[0], folds, seed):
        x_mean = X[training].mean(axis=0)
        y_mean = Y[training].mean(axis=0)
        x_train = _padded(X[training] - x_mean, width)
        y_train = _padded(Y[training] - y_mean, width)
        x_test = _padded(X[held_out] - x_mean, width)
        y_test = _padded(Y[held_out] - y_mean, width)

        forward_map, _ = orthogonal_procrustes(x_train, y_train)
        backward_map, _ = orthogonal_procrustes(y_train, x_train)
        # Score only the real units of the target, not its zero padding.
        forward = pearsonr((x_test @ forward_map)[:, :q], y_test[:, :q], axis=0).statistic.mean()
        backward = pearsonr((y_test @ backward_map)[:, :p], x_test[:, :p], axis=0).statistic.mean()
        fold_scores.append(0.5 * (forward + backward))
    return float(np.mean(fold_scores))


def _correlations(A, B):
    p = A.shape[1]
    return np.corrcoef(A.T, B.T)[:p, p:]


def permutation_reference(X, Y, folds=5, seed=0):
    """Cross-validated Hungarian matching score (scipy linear_sum_assignment)."""
    fold_scores = []
    for training, held_out in reference_folds(X.shape[0], folds, seed):
        rows, columns = linear_sum_assignment(_correlations(X[training], Y[training]), maximize=True)
        matched = pearsonr(X[held_out][:, rows], Y[held_out][:, columns], axis=0).statistic
        fold_scores.append(matched.mean())
    return float(np.mean(fold_scores))


def soft_matching_reference(X, Y, folds=5, seed=0):
    """Cross-validated soft-matching score (POT ot.emd with uniform marginals)."""
    p, q = X.shape[1], Y.shape[1]
    fold_scores = []
    for training, held_out in reference_folds(X.shape[0], folds, seed):
        cost = 1.0 - _correlations(X[training], Y[training])
        plan = ot.emd(np.full(p, 1.0 / p), np.full(q, 1.0 / q), cost, numItermax=10_000_000)
        fold_scores.append(np.sum(plan * _correlations(X[held_out], Y[held_out])))
    return float(np.mean(fold_scores))


def linear_cka_reference(X, Y):
    """Linear CKA, biased HSIC, in the feature-space form of Kornblith et al. (2019)."""
    x = X - X.mean(axis=0)
    y = Y - Y.mean(axis=0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


REFERENCE_METRICS = {
    "linear_regression": linear_regression_reference,
    "procrustes": procrustes_reference,
    "permutation": permutation_reference,
    "soft_matching": soft_matching_reference,
    "linear_cka": linear_cka_reference,
}

CROSS_VALIDATED = {"linear_regression", "procrustes", "permutation", "soft_matching"}


def reference_pairs(features, metrics, folds=5, seed=0):
    """Return ``{(a, b): {metric: value}}`` for every pair of seeds, one pair and metric at a time."""
    results = {}
    for first, second in itertools.combinations(features, 2):
        X = np.asarray(features[first], dtype=np.float64)
        Y = np.asarray(features[second], dtype=np.float64)
        scores = {}
        for name in metrics:
            function = REFERENCE_METRICS[name]
            if name in CROSS_VALIDATED:
                scores[name] = function(X, Y, folds=folds, seed=seed)
            else:
                scores[name] = function(X, Y)
        results[(first, second)] = scores
    return results

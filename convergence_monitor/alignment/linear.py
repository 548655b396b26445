"""Cross-validated ridge regression score (invariant to per-unit affine maps).

Definition
----------
On each fold, the source X and the target Y are z-scored with the training
means and population standard deviations (dead units become zero). With
Z the m × p standardized training source, W the standardized training
target and ZᵀZ = V diag(λ) Vᵀ, ridge regression with an unpenalized
intercept gives

    B(α) = (ZᵀZ + α I)⁻¹ Zᵀ W = V diag(1 / (λ + α)) Vᵀ Zᵀ W.

The penalty α is chosen on the training samples only, by generalized
cross-validation (Golub, Heath and Wahba 1979) with one α shared by all
target units:

    GCV(α) = ‖W − Z B(α)‖²_F / (m q (1 − df(α) / m)²),
    df(α) = 1 + Σ_k λ_k / (λ_k + α),

the 1 counting the intercept. Both quantities come from the single
eigendecomposition of ZᵀZ, so every penalty costs O(p q) once Vᵀ Zᵀ W is
formed. The residual uses ‖W − Z B‖² = ‖W‖² − Σ_k (2 − f_k) ‖g_k‖² / (λ_k + α)
with f_k = λ_k / (λ_k + α) and g_k the k-th row of Vᵀ Zᵀ W, which needs no
division by λ_k.

Penalty grid: ``alphas`` are multiples of the mean eigenvalue
tr(ZᵀZ) / p of the standardized training Gram matrix (about m when no unit is
dead), by default ``10 ** linspace(-6, 5, 23)`` (half-decade steps).
Measuring α in that unit makes the grid independent of the number of
samples, and standardizing makes the score exactly invariant to scaling and
shifting each unit. The lower end lets a representation scored against
itself reach 1 within about 1e-6, even when most of its variance lies in a
few directions. The upper end shrinks a fit to noise to almost nothing.

The score of a direction is the mean over target units of the Pearson
correlation between predicted and actual held-out responses, averaged over
folds. Dead target units count as 0. The symmetric score is the mean of the
X → Y and Y → X scores.

NOTE: ridge is not invariant to every invertible affine map. Standardizing
removes per-unit scale and shift exactly, but a map that mixes units changes
the eigenvalues that the penalty acts on, so the score moves slightly unless
the selected penalty is small relative to the spectrum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _engine
from ._stats import FoldBlock, PairCross, column_correlations, transposed
from ._validation import check_alphas, check_symmetric

DEFAULT_RELATIVE_ALPHAS = 10.0 ** np.linspace(-6.0, 5.0, 23)


def select_alpha(
    source: FoldBlock, target: FoldBlock, cross: PairCross, relative_alphas: np.ndarray
) -> tuple[float, np.ndarray]:
    """Return the GCV-selected penalty and the ridge coefficients in the eigenbasis of ZᵀZ (p × q).

    The coefficients on the standardized source units are ``V @ shrunk``, V
    the eigenvectors from ``source.gram_eigen()``.

    ``cross`` must have ``source`` as its source side and ``target`` as its
    target side.
    """
    eigenvalues, eigenvectors = source.gram_eigen()
    m, p = source.train_centred.shape

    # Zᵀ W = m × (training correlation matrix), rotated into the eigenbasis.
    rotated = eigenvectors.T @ (m * cross.correlation)
    row_norms = np.einsum("ij,ij->i", rotated, rotated)
    q = target.width

    # ‖W‖²_F: each live standardized target column has squared norm m by construction.
    target_norm = m * np.count_nonzero(~target.train_dead)

    alphas = relative_alphas * (eigenvalues.sum() / p)
    scores = np.empty(alphas.size)
    for index, alpha in enumerate(alphas):
        shrink = eigenvalues / (eigenvalues + alpha)
        explained = np.sum((2.0 - shrink) * row_norms / (eigenvalues + alpha))
        # Clamp: the residual is a difference of nearly equal sums when the fit is close.
        residual = max(target_norm - explained, 0.0)
        dof_left = 1.0 - (1.0 + shrink.sum()) / m
        # A fit that uses up every degree of freedom has no GCV estimate: never select it.
        scores[index] = residual / (m * q * dof_left**2) if dof_left > 1e-12 else np.inf

    best = int(np.argmin(scores))
    alpha = float(alphas[best])
    # Coefficients in the eigenbasis: B(α) = V · shrunk, so predictions never need V · shrunk itself.
    shrunk = rotated / (eigenvalues + alpha)[:, None]
    return alpha, shrunk


def prepare_fold_block(block: FoldBlock) -> None:
    """Compute the Gram eigendecomposition and held-out projection that every direction from ``block`` reads."""
    block.gram_eigen()
    block.test_in_eigenbasis()


def ridge_direction_score(source: FoldBlock, target: FoldBlock, cross: PairCross, relative_alphas: np.ndarray) -> float:
    """Return the held-out ridge score of one direction (source → target) on one fold."""
    _, shrunk = select_alpha(source, target, cross, relative_alphas)
    # (Z_test V) is shared by every target of this source, and costs less than forming V · shrunk.
    predicted = source.test_in_eigenbasis() @ shrunk
    correlations = column_correlations(predicted, target.test_standardized)
    return float(correlations.mean())


def fold_kernel(first: FoldBlock, second: FoldBlock, cross: PairCross, *, alphas=None, symmetric: bool = True) -> float:
    """Return the ridge score of one pair on one fold (the mean of both directions if symmetric)."""
    relative_alphas = DEFAULT_RELATIVE_ALPHAS if alphas is None else alphas
    forward = ridge_direction_score(first, second, cross, relative_alphas)
    if not symmetric:
        return forward
    backward = ridge_direction_score(second, first, transposed(cross), relative_alphas)
    return 0.5 * (forward + backward)


def linear_regression_score(
    X: Any,
    Y: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    alphas: Any = None,
    symmetric: bool = True,
    context: str | None = None,
) -> float:
    """Score how well ridge regression predicts Y from X (and X from Y) on held-out samples.

    Parameters
    ----------
    X, Y : array-like or torch.Tensor, shapes (n, p) and (n, q)
        Samples × units of the two representations.
    folds, seed : int
        Number of cross-validation folds and the seed of their permutation.
    alphas : sequence of float, optional
        Candidate penalties in units of the mean eigenvalue tr(ZᵀZ) / p of
        the standardized training Gram matrix. Default
        ``10 ** linspace(-6, 5, 23)``. One value fixes the penalty.
    symmetric : bool
        Average the X → Y and Y → X scores (default) or return X → Y only.
    context : str, optional
        Text prefixed to error and warning messages.

    Returns
    -------
    float
        Mean over folds and target units of the held-out Pearson correlation
        between predicted and actual responses; NaN (with a warning) when
        every unit of a side is constant on some fold.
    """
    options = {"alphas": check_alphas(alphas, context), "symmetric": check_symmetric(symmetric, context)}
    return _engine.score_single_pair(X, Y, "linear_regression", fold_kernel, True, options, folds, seed, context)

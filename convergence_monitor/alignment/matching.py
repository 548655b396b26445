"""Permutation and soft-matching scores (invariant to the order of units).

Permutation
-----------
On each fold, R is the p × p matrix of training Pearson correlations between
units of X and units of Y. The Hungarian algorithm (scipy
``linear_sum_assignment``) finds the permutation π maximizing Σ_i R[i, π(i)].
The score is the mean over i of the held-out correlation between unit i of X
and unit π(i) of Y, averaged over folds. It needs p = q.

Soft matching (Khosla and Williams, 2023)
-----------------------------------------
The transport plan P solves the exact optimal transport problem

    min_P Σ_ij P_ij (1 − R_ij)  subject to  P ≥ 0,  P 1 = 1/p,  Pᵀ 1 = 1/q,

solved in float64. The score is Σ_ij P_ij r_ij with r the held-out
correlations, averaged over folds.

For p ≠ q the plan comes from POT's network simplex (``ot.emd``). For p = q
the feasible plans are the doubly stochastic matrices scaled by 1/p, whose
vertices are the permutation matrices (Birkhoff-von Neumann), so a linear
cost attains its minimum at a permutation. The Hungarian assignment is
therefore an exact optimal plan, found in a fraction of the network
simplex's time, and the score equals the permutation score. When several
plans tie (for example around dead units), ``ot.emd`` may return another
optimal vertex; both are optimal, but their held-out scores can differ.

Dead units have correlation 0 with every unit, in R and in r.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

from . import _engine
from ._stats import FoldBlock, PairCross
from ._validation import fail

# Tolerance on the marginals and total mass of a transport plan, relative to 1/p, 1/q and 1.
PLAN_RTOL = 1e-8

# Network simplex iteration cap; POT's default of 100000 can stop short for a few hundred units.
EMD_MAX_ITERATIONS = 10_000_000


def check_equal_widths(n: int, widths: Mapping[str, int], context: str | None) -> None:
    """Raise unless every input has the same number of units."""
    if len(set(widths.values())) > 1:
        found = ", ".join(f"{side}: {width}" for side, width in widths.items())
        raise fail(
            f"permutation matching needs the same number of units on both sides; found {found}. "
            f"Use soft_matching_score for unequal widths",
            context,
        )


def held_out_correlations(first: FoldBlock, second: FoldBlock, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Return the held-out Pearson correlations of the unit pairs (rows[k], columns[k])."""
    m = first.test_standardized.shape[0]
    left = first.test_standardized[:, rows]
    right = second.test_standardized[:, columns]
    return np.einsum("ij,ij->j", left, right) / m


def assignment(cross: PairCross) -> tuple[np.ndarray, np.ndarray]:
    """Return the Hungarian assignment (rows, columns) maximizing the summed training correlation.

    Cached on ``cross``, so permutation and soft matching share one solve per pair and fold.
    """
    if cross.assignment is None:
        cross.assignment = linear_sum_assignment(cross.correlation, maximize=True)
    return cross.assignment


def permutation_kernel(first: FoldBlock, second: FoldBlock, cross: PairCross) -> float:
    """Return the permutation score of one pair on one fold."""
    rows, columns = assignment(cross)
    return float(held_out_correlations(first, second, rows, columns).mean())


def transport_plan(correlation: np.ndarray) -> np.ndarray:
    """Return the exact optimal transport plan for cost 1 − correlation with uniform marginals.

    Raises RuntimeError when the solver reports a failure or the plan
    violates non-negativity, a marginal or the total mass, so a solver
    failure never reads as a score.
    """
    p, q = correlation.shape
    source = np.full(p, 1.0 / p)
    target = np.full(q, 1.0 / q)
    cost = 1.0 - correlation
    plan, log = ot.emd(source, target, cost, numItermax=EMD_MAX_ITERATIONS, log=True)
    plan = np.asarray(plan, dtype=np.float64)

    if log.get("result_code") != 1:
        raise RuntimeError(
            f"ot.emd did not find an optimal transport plan for a {p} × {q} cost matrix "
            f"(result code {log.get('result_code')}, message {log.get('warning')!r})"
        )
    if plan.shape != (p, q) or not np.isfinite(plan).all():
        raise RuntimeError(f"ot.emd returned an invalid plan: expected a finite {p} × {q} array, found shape {plan.shape}")
    if plan.min() < -PLAN_RTOL / (p * q):
        raise RuntimeError(f"ot.emd returned a plan with negative mass (minimum entry {plan.min():.3e})")

    row_error = np.abs(plan.sum(axis=1) * p - 1.0).max()
    if row_error > PLAN_RTOL:
        raise RuntimeError(f"ot.emd returned a plan whose row sums differ from 1/{p} by a relative {row_error:.3e}")
    column_error = np.abs(plan.sum(axis=0) * q - 1.0).max()
    if column_error > PLAN_RTOL:
        raise RuntimeError(f"ot.emd returned a plan whose column sums differ from 1/{q} by a relative {column_error:.3e}")
    mass_error = abs(plan.sum() - 1.0)
    if mass_error > PLAN_RTOL:
        raise RuntimeError(f"ot.emd returned a plan of total mass {plan.sum():.12g}, expected 1")
    return plan


def permutation_plan(cross: PairCross) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the optimal plan of an equal-width pair as (rows, columns, mass): a permutation scaled by 1/p.

    Raises RuntimeError unless the assignment matches every unit exactly once.
    """
    p = cross.correlation.shape[0]
    rows, columns = assignment(cross)
    if not (np.array_equal(np.sort(rows), np.arange(p)) and np.array_equal(np.sort(columns), np.arange(p))):
        raise RuntimeError(f"the Hungarian assignment of a {p} × {p} cost matrix is not a permutation")
    return rows, columns, np.full(p, 1.0 / p)


def soft_matching_kernel(first: FoldBlock, second: FoldBlock, cross: PairCross) -> float:
    """Return the soft-matching score of one pair on one fold."""
    p, q = cross.correlation.shape
    if p == q:
        rows, columns, mass = permutation_plan(cross)
    else:
        plan = transport_plan(cross.correlation)
        # The plan has at most p + q − 1 non-zero entries, so only those held-out correlations are needed.
        rows, columns = np.nonzero(plan > 0)
        mass = plan[rows, columns]
    correlations = held_out_correlations(first, second, rows, columns)
    return float(np.dot(mass, correlations))


def permutation_score(X: Any, Y: Any, *, folds: int = 5, seed: int = 0, context: str | None = None) -> float:
    """Score X against Y after the best training-fold one-to-one matching of units.

    Parameters
    ----------
    X, Y : array-like or torch.Tensor, shape (n, p) each
        Samples × units; both sides need the same number of units (use
        :func:`soft_matching_score` otherwise).
    folds, seed : int
        Number of cross-validation folds and the seed of their permutation.
    context : str, optional
        Text prefixed to error and warning messages.

    Returns
    -------
    float
        Mean over folds of the mean held-out correlation of matched units.
    """
    return _engine.score_single_pair(
        X, Y, "permutation", permutation_kernel, True, {}, folds, seed, context, check=check_equal_widths
    )


def soft_matching_score(X: Any, Y: Any, *, folds: int = 5, seed: int = 0, context: str | None = None) -> float:
    """Score X against Y after the optimal training-fold transport plan between units.

    Parameters
    ----------
    X, Y : array-like or torch.Tensor, shapes (n, p) and (n, q)
        Samples × units; p and q may differ.
    folds, seed : int
        Number of cross-validation folds and the seed of their permutation.
    context : str, optional
        Text prefixed to error and warning messages.

    Returns
    -------
    float
        Mean over folds of Σ_ij P_ij r_ij, r the held-out correlations.

    Raises
    ------
    RuntimeError
        If the transport solver fails or returns a plan that violates the
        constraints.
    """
    return _engine.score_single_pair(X, Y, "soft_matching", soft_matching_kernel, True, {}, folds, seed, context)

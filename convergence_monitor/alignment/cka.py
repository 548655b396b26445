"""Linear centred kernel alignment with the biased and the unbiased HSIC estimator.

With Xc, Yc centred on all samples, K = Xc Xcᵀ and L = Yc Ycᵀ:

Linear CKA (Kornblith et al., 2019) uses the biased HSIC estimator
tr(K H L H), which for centred data is ‖Xcᵀ Yc‖²_F:

    CKA(X, Y) = ‖Xcᵀ Yc‖²_F / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F),  in [0, 1].

Debiased CKA replaces it by the unbiased estimator of Song et al. (2012).
With K̃, L̃ the Gram matrices with zeroed diagonals,

    HSIC_u(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) 1ᵀK̃L̃1] / (n(n−3)),

and CKA_u = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)). It needs n ≥ 4
and can be negative. HSIC_u is unchanged by a translation of X, so it is
computed on centred data, where K1 = 0 and, with k_i = K_ii, l_i = L_ii,

    tr(K̃ L̃) = ‖Xcᵀ Yc‖²_F − kᵀl,  K̃1 = −k,  1ᵀK̃1 = −Σ k.

Both estimators never form an n × n matrix unless the units outnumber the
samples, in which case ‖Xcᵀ Yc‖²_F is computed as Σ K ∘ L instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _engine
from ._stats import FullBlock, FullPair
from ._validation import fail, with_context


def _gram(block: FullBlock) -> np.ndarray:
    if "gram" not in block.cache:
        block.cache["gram"] = block.centred @ block.centred.T
    return block.cache["gram"]


def _self_frobenius_squared(block: FullBlock) -> float:
    """Return ‖Xcᵀ Xc‖²_F, through the smaller of the p × p and n × n products."""
    if "self_frobenius_squared" not in block.cache:
        n, p = block.centred.shape
        product = block.centred.T @ block.centred if p <= n else _gram(block)
        block.cache["self_frobenius_squared"] = float(np.sum(product * product))
    return block.cache["self_frobenius_squared"]


def _row_squared_norms(block: FullBlock) -> np.ndarray:
    if "row_squared_norms" not in block.cache:
        block.cache["row_squared_norms"] = np.einsum("ij,ij->i", block.centred, block.centred)
    return block.cache["row_squared_norms"]


def _cross_frobenius_squared(pair: FullPair) -> float:
    """Return ‖Xcᵀ Yc‖²_F, through the smaller of the p × q and n × n products."""
    if "cross_frobenius_squared" not in pair.cache:
        n, p = pair.first.centred.shape
        q = pair.second.centred.shape[1]
        if p * q <= n * n:
            covariance = pair.covariance()
            value = np.sum(covariance * covariance)
        else:
            value = np.sum(_gram(pair.first) * _gram(pair.second))
        pair.cache["cross_frobenius_squared"] = float(value)
    return pair.cache["cross_frobenius_squared"]


def linear_cka_kernel(first: FullBlock, second: FullBlock, pair: FullPair) -> float:
    """Return linear CKA with the biased HSIC estimator."""
    denominator = np.sqrt(_self_frobenius_squared(first) * _self_frobenius_squared(second))
    return float(_cross_frobenius_squared(pair) / denominator)


def _unbiased_hsic(cross_squared: float, k: np.ndarray, l: np.ndarray) -> float:
    n = k.size
    diagonal_product = float(np.dot(k, l))
    trace_term = cross_squared - diagonal_product
    sum_term = k.sum() * l.sum() / ((n - 1) * (n - 2))
    row_term = 2.0 * diagonal_product / (n - 2)
    return float((trace_term + sum_term - row_term) / (n * (n - 3)))


def debiased_cka_kernel(first: FullBlock, second: FullBlock, pair: FullPair) -> float:
    """Return CKA with the unbiased HSIC estimator, NaN if a self-term is not positive."""
    k = _row_squared_norms(first)
    l = _row_squared_norms(second)
    cross = _unbiased_hsic(_cross_frobenius_squared(pair), k, l)
    self_first = _unbiased_hsic(_self_frobenius_squared(first), k, k)
    self_second = _unbiased_hsic(_self_frobenius_squared(second), l, l)

    if self_first <= 0.0 or self_second <= 0.0:
        message = (
            f"the unbiased HSIC of {first.side} or {second.side} with itself is not positive "
            f"({self_first:.3e}, {self_second:.3e}), so debiased CKA is undefined and returned NaN; "
            f"use more samples"
        )
        warnings.warn(with_context(message, first.context), _engine.UndefinedScoreWarning, stacklevel=2)
        return float("nan")
    return cross / np.sqrt(self_first * self_second)


def check_debiased_samples(n: int, widths: Mapping[str, int], context: str | None) -> None:
    """Raise unless there are at least 4 samples, as the unbiased HSIC estimator needs."""
    if n < 4:
        raise fail(f"debiased CKA needs at least 4 samples; found {n}", context)


def linear_cka(X: Any, Y: Any, *, context: str | None = None) -> float:
    """Return linear CKA (biased HSIC estimator) between X (n × p) and Y (n × q).

    Invariant to rotations, reflections, translations and isotropic scaling
    of either side; 1 for X against itself. Uses all samples, no folds.
    """
    return _engine.score_single_pair(X, Y, "linear_cka", linear_cka_kernel, False, {}, 0, 0, context)


def debiased_cka(X: Any, Y: Any, *, context: str | None = None) -> float:
    """Return linear CKA with the unbiased HSIC estimator of Song et al. (2012).

    Needs n ≥ 4 samples. Unlike :func:`linear_cka` it is not biased upward
    when units outnumber samples, and it can be negative.
    """
    return _engine.score_single_pair(
        X, Y, "debiased_cka", debiased_cka_kernel, False, {}, 0, 0, context, check=check_debiased_samples
    )

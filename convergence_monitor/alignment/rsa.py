"""Representational similarity analysis score.

The representational dissimilarity matrix of X has entries
D_ij = 1 − corr(x_i, x_j), the Pearson correlation between samples i and j
across units. The score is the Spearman correlation between the upper
triangles (i < j) of the two matrices, with tied distances given their
average rank. It uses all samples, no folds, and is invariant to the order
of units and to a positive scale or a shift applied to every unit of a
sample.

A sample whose units are all equal has no defined correlation. Like a dead
unit elsewhere in this package, its correlation with every other sample
counts as 0 (dissimilarity 1), with a warning.

NOTE: memory grows as n²: the n × n correlation matrix and its n(n−1)/2
ranks for each seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import rankdata

from . import _engine
from ._stats import DeadUnitWarning, FullBlock, FullPair, standardize
from ._validation import fail, with_context

# Dissimilarities lie in [0, 2]. A spread below this is rounding residue, and
# ranking it would give an arbitrary order, so the matrix counts as constant.
CONSTANT_SPREAD = 1e-10


def _dissimilarity_ranks(block: FullBlock) -> np.ndarray | None:
    """Return the centred ranks of the upper triangle of the block's dissimilarity matrix.

    Returns None when every dissimilarity is equal up to rounding.
    """
    if "dissimilarity_ranks" not in block.cache:
        n, p = block.data.shape

        # Standardizing rows across units turns their inner products into correlations.
        standardized_rows, constant = standardize(block.data.T)
        if constant.any():
            message = (
                f"{int(constant.sum())} of {n} samples of {block.side} have the same value in every "
                f"unit; their correlations with other samples count as 0"
            )
            warnings.warn(with_context(message, block.context), DeadUnitWarning, stacklevel=2)
        correlations = standardized_rows.T @ standardized_rows / p

        upper = np.triu_indices(n, k=1)
        dissimilarities = 1.0 - correlations[upper]
        if np.ptp(dissimilarities) <= CONSTANT_SPREAD:
            block.cache["dissimilarity_ranks"] = None
        else:
            ranks = rankdata(dissimilarities)
            block.cache["dissimilarity_ranks"] = ranks - ranks.mean()
    return block.cache["dissimilarity_ranks"]


def rsa_kernel(first: FullBlock, second: FullBlock, pair: FullPair) -> float:
    """Return the Spearman correlation of the two dissimilarity matrices."""
    ranks_first = _dissimilarity_ranks(first)
    ranks_second = _dissimilarity_ranks(second)
    if ranks_first is None or ranks_second is None:
        message = (
            f"every dissimilarity between samples of {first.side} or of {second.side} is equal, "
            f"so the RSA score is undefined and returned NaN"
        )
        warnings.warn(with_context(message, first.context), _engine.UndefinedScoreWarning, stacklevel=2)
        return float("nan")
    norms = np.linalg.norm(ranks_first) * np.linalg.norm(ranks_second)
    return float(np.dot(ranks_first, ranks_second) / norms)


def check_rsa_shapes(n: int, widths: Mapping[str, int], context: str | None) -> None:
    """Raise unless there are 3 samples and 2 units per side, the least RSA can use."""
    if n < 3:
        raise fail(f"RSA needs at least 3 samples to rank their dissimilarities; found {n}", context)
    narrow = {side: width for side, width in widths.items() if width < 2}
    if narrow:
        found = ", ".join(f"{side}: {width}" for side, width in narrow.items())
        raise fail(f"RSA needs at least 2 units per sample to correlate samples; found {found}", context)


def rsa_score(X: Any, Y: Any, *, context: str | None = None) -> float:
    """Return the Spearman correlation of the correlation-distance RDMs of X (n × p) and Y (n × q)."""
    return _engine.score_single_pair(X, Y, "rsa", rsa_kernel, False, {}, 0, 0, context, check=check_rsa_shapes)

"""Orthogonal Procrustes score and angular Procrustes distance (invariant to rotations and reflections).

Score
-----
On each fold, centre X and Y with their training means and zero-pad the
narrower side to d = max(p, q) units. With Xc, Yc the padded training blocks
and Xcᵀ Yc = U S Vᵀ, the map Q = U Vᵀ minimizes ‖Xc Q − Yc‖_F over
orthogonal d × d matrices. The X → Y score is the mean over Y's q real units
of the Pearson correlation between the held-out X Q and the held-out Y; the
Y → X score uses Qᵀ and X's p real units. The symmetric score averages both
and the result is the mean over folds.

NOTE: the map absorbs any rotation or reflection of the source, so the
X → Y score ignores one applied to X. The per-unit correlation is measured
in the target's own basis. A general rotation of the target therefore moves
the score unless the alignment is perfect, while permutations and sign
flips of target units do not. So the symmetric score is invariant to signed
permutations of either side, but not to every rotation of either side. The
distance below is invariant to rotations of both.

NOTE: when a training fold has fewer samples than units, Xcᵀ Yc is rank
deficient and Q is not unique on its null space. The score then depends on
the completion that LAPACK's SVD returns (deterministic, but arbitrary), so
use more probe samples than units per training fold.

Distance
--------
With Xc, Yc centred on all samples,

    θ(X, Y) = arccos(‖Xcᵀ Yc‖_* / (‖Xc‖_F ‖Yc‖_F)),

in radians, within [0, π/2]. Zero-padding leaves both norms unchanged, so
it is implicit. θ is a metric on representations modulo translation,
rotation, reflection and isotropic scaling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _engine
from ._stats import FoldBlock, FullBlock, FullPair, PairCross, column_correlations
from ._validation import check_symmetric


def _pad_columns(block: np.ndarray, width: int) -> np.ndarray:
    if block.shape[1] == width:
        return block
    padded = np.zeros((block.shape[0], width))
    padded[:, : block.shape[1]] = block
    return padded


def orthogonal_map(cross: PairCross) -> np.ndarray:
    """Return the d × d orthogonal Q = U Vᵀ from the SVD of the zero-padded training Xcᵀ Yc."""
    p, q = cross.covariance.shape
    padded = cross.covariance
    if p != q:
        width = max(p, q)
        padded = np.zeros((width, width))
        padded[:p, :q] = cross.covariance
    left, _, right = np.linalg.svd(padded)
    return left @ right


def fold_kernel(first: FoldBlock, second: FoldBlock, cross: PairCross, *, symmetric: bool = True) -> float:
    """Return the Procrustes score of one pair on one fold."""
    p, q = first.width, second.width
    width = max(p, q)
    rotation = orthogonal_map(cross)

    mapped_first = _pad_columns(first.test_centred, width) @ rotation
    forward = float(column_correlations(mapped_first[:, :q], second.test_standardized).mean())
    if not symmetric:
        return forward

    mapped_second = _pad_columns(second.test_centred, width) @ rotation.T
    backward = float(column_correlations(mapped_second[:, :p], first.test_standardized).mean())
    return 0.5 * (forward + backward)


def distance_kernel(first: FullBlock, second: FullBlock, pair: FullPair) -> float:
    """Return the angular Procrustes distance between two centred blocks."""
    nuclear = np.linalg.svd(pair.covariance(), compute_uv=False).sum()
    norms = np.linalg.norm(first.centred) * np.linalg.norm(second.centred)
    # Clip before arccos: rounding can push the cosine just above 1.
    cosine = min(max(nuclear / norms, 0.0), 1.0)
    return float(np.arccos(cosine))


def procrustes_score(
    X: Any,
    Y: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    symmetric: bool = True,
    context: str | None = None,
) -> float:
    """Score X against Y after the best training-fold rotation, on held-out samples.

    Parameters
    ----------
    X, Y : array-like or torch.Tensor, shapes (n, p) and (n, q)
        Samples × units; the narrower side is zero-padded.
    folds, seed : int
        Number of cross-validation folds and the seed of their permutation.
    symmetric : bool
        Average the X → Y and Y → X scores (default) or return X → Y only.
    context : str, optional
        Text prefixed to error and warning messages.

    Returns
    -------
    float
        Mean over folds of the mean per-unit held-out Pearson correlation;
        1 when Y is a rotated or reflected copy of X.
    """
    options = {"symmetric": check_symmetric(symmetric, context)}
    return _engine.score_single_pair(X, Y, "procrustes", fold_kernel, True, options, folds, seed, context)


def procrustes_distance(X: Any, Y: Any, *, context: str | None = None) -> float:
    """Return the angular Procrustes distance arccos(‖XcᵀYc‖_* / (‖Xc‖_F ‖Yc‖_F)) in radians.

    Uses all samples, centred, without folds. 0 when Y is a rotated,
    reflected, translated or isotropically scaled copy of X; NaN with a
    warning when every unit of a side is constant.
    """
    return _engine.score_single_pair(X, Y, "procrustes_distance", distance_kernel, False, {}, 0, 0, context)

"""Per-seed, per-fold statistics shared by the cross-validated metrics.

A :class:`FoldBlock` contains everything one seed contributes on one fold.
That is the training means and standard deviations, the centred training
block, the held-out block (centred with the training means, and separately
standardized with its own statistics) and the dead-unit masks. It also
caches the eigendecomposition of the standardized training Gram matrix. A
:class:`PairCross` contains the training cross-covariance of two seeds, which
Procrustes, permutation, soft matching and ridge regression all read.

Dead units
----------
A unit is dead on a block when its standard deviation there is at most
``DEAD_RTOL`` times its largest absolute value (or exactly zero). The
threshold is relative, so activations of scale 1e-4 are not dead, while a
constant unit whose centred values are rounding residue (about 1e-16 of its
value) is. A dead unit's Pearson correlation with anything counts as 0, in
fitting and in scoring, because its standardized column is set to zero. A
unit dead on a fold's training samples counts as 0 on that fold's held-out
samples too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import with_context

DEAD_RTOL = 1e-8


class DeadUnitWarning(RuntimeWarning):
    """Units with zero variance on a fold: their correlations count as 0."""


def power_of_two_scale(data: np.ndarray) -> float:
    """Return the power of two that brings the largest absolute value of ``data`` into [0.5, 1).

    Every metric ignores a scale factor on either side, and a product with a
    power of two is exact in binary floating point, so scaling changes no
    score. It keeps squares and cross-products of inputs near 1e±300 from
    overflowing or underflowing, which would otherwise read as infinite
    variance or as constant units.
    """
    largest = float(max(np.max(data), -np.min(data)))
    if largest == 0.0:
        return 1.0
    _, exponent = np.frexp(largest)
    # Stay within the normal float64 range, so the factor itself is finite and exact.
    return float(np.ldexp(1.0, int(np.clip(-exponent, -1021, 1021))))


def make_folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split ``range(n)`` into ``folds`` (training, held-out) index pairs.

    The split is a permutation from ``numpy.random.default_rng(seed)`` cut
    into ``folds`` nearly equal parts, so it depends only on n, folds and
    seed. Indices inside each part are sorted.
    """
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    result = []
    for k in range(folds):
        held_out = np.sort(parts[k])
        training = np.sort(np.concatenate([parts[j] for j in range(folds) if j != k]))
        result.append((training, held_out))
    return result


def dead_units(block: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Return the boolean mask of units whose variance is zero relative to their scale."""
    return dead_mask(std, np.abs(block).max(axis=0))


def dead_mask(std: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Return ``std <= DEAD_RTOL * scale``, ``scale`` being each unit's largest absolute value."""
    return std <= DEAD_RTOL * scale


def standardize(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each column with its own mean and population standard deviation.

    Dead columns become zero. Returns the standardized block and the dead mask.
    """
    centred = block - block.mean(axis=0)
    std = np.sqrt(np.mean(centred * centred, axis=0))
    dead = dead_units(block, std)
    safe_std = np.where(dead, 1.0, std)
    standardized = centred / safe_std
    standardized[:, dead] = 0.0
    return standardized, dead


def column_correlations(predicted: np.ndarray, target_standardized: np.ndarray) -> np.ndarray:
    """Return the Pearson correlation of each column of ``predicted`` with the same target column.

    ``target_standardized`` must come from :func:`standardize`. A column that
    is dead on either side gets correlation 0.
    """
    predicted_standardized, _ = standardize(predicted)
    m = predicted.shape[0]
    return np.einsum("ij,ij->j", predicted_standardized, target_standardized) / m


@dataclass
class FoldBlock:
    """One seed's statistics on one fold (fitted on the training samples)."""

    fold: int
    folds: int
    train_mean: np.ndarray
    train_std: np.ndarray  # population std on the training samples; 1.0 where dead
    train_centred: np.ndarray  # m × p, dead columns zero
    train_dead: np.ndarray
    test_centred: np.ndarray  # held-out block minus the training mean, dead columns zero
    test_standardized: np.ndarray  # held-out block z-scored with held-out statistics, dead columns zero
    test_dead: np.ndarray
    _gram_eigen: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _test_in_eigenbasis: np.ndarray | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return self.train_centred.shape[1]

    @property
    def all_dead(self) -> bool:
        """Whether every unit is dead on the training or the held-out samples, leaving no correlation defined."""
        return bool((self.train_dead | self.test_dead).all())

    def gram_eigen(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (eigenvalues, eigenvectors) of ZᵀZ, Z the standardized training block.

        Computed once per seed and fold; it serves every ridge penalty and
        every pair where this seed is the source.
        """
        if self._gram_eigen is None:
            standardized = self.train_centred / self.train_std
            eigenvalues, eigenvectors = np.linalg.eigh(standardized.T @ standardized)
            # Clamp: ZᵀZ is positive semi-definite, rounding can push an eigenvalue below zero.
            self._gram_eigen = (np.maximum(eigenvalues, 0.0), eigenvectors)
        return self._gram_eigen

    def test_in_eigenbasis(self) -> np.ndarray:
        """Return the held-out block, standardized with the training statistics, times V from :meth:`gram_eigen`."""
        if self._test_in_eigenbasis is None:
            self._test_in_eigenbasis = (self.test_centred / self.train_std) @ self.gram_eigen()[1]
        return self._test_in_eigenbasis


def build_fold_block(
    data: np.ndarray,
    training: np.ndarray,
    held_out: np.ndarray,
    fold: int,
    folds: int,
    side: str,
    context: str | None,
    notes: list[str],
    scale: float = 1.0,
) -> FoldBlock:
    """Compute one seed's :class:`FoldBlock` and append its dead-unit messages to ``notes``.

    The caller issues the messages as :class:`DeadUnitWarning`, in a fixed order.
    ``scale`` (a power of two from :func:`power_of_two_scale`) multiplies the data first.
    """
    # Sums run in float64 whatever the input dtype. Each product is a new array, so centring in place is safe.
    train_centred = np.multiply(data[training], scale, dtype=np.float64)
    test = np.multiply(data[held_out], scale, dtype=np.float64)

    # Every later fit uses only these training statistics.
    unit_scale = np.abs(train_centred).max(axis=0)
    mean = train_centred.mean(axis=0)
    train_centred -= mean
    std = np.sqrt(np.mean(train_centred * train_centred, axis=0))
    train_dead = dead_mask(std, unit_scale)
    std = np.where(train_dead, 1.0, std)
    train_centred[:, train_dead] = 0.0

    # A unit dead on the training samples was fitted as carrying no information,
    # so it also scores 0 on the held-out samples, even where it varies there.
    test_centred = test - mean
    test_centred[:, train_dead] = 0.0
    test_standardized, test_dead = standardize(test)
    test_standardized[:, train_dead] = 0.0

    for dead, where in ((train_dead, "training"), (test_dead, "held-out")):
        message = _dead_message(dead, where, fold, folds, side, context)
        if message is not None:
            notes.append(message)

    return FoldBlock(
        fold=fold,
        folds=folds,
        train_mean=mean,
        train_std=std,
        train_centred=train_centred,
        train_dead=train_dead,
        test_centred=test_centred,
        test_standardized=test_standardized,
        test_dead=test_dead,
    )


def _dead_message(dead: np.ndarray, where: str, fold: int, folds: int, side: str, context: str | None) -> str | None:
    count = int(dead.sum())
    if count == 0 or count == dead.size:
        # An all-dead side makes the metric NaN; the caller warns about that.
        return None
    first = np.flatnonzero(dead)[:5].tolist()
    message = (
        f"fold {fold + 1} of {folds}: {count} of {dead.size} units of {side} are constant on the "
        f"{where} samples (first indices {first}); their correlations count as 0"
    )
    return with_context(message, context)


@dataclass
class PairCross:
    """Training cross-statistics of a source and a target seed on one fold."""

    covariance: np.ndarray  # XcᵀYc on the training samples, p × q
    correlation: np.ndarray  # Pearson correlations, p × q, 0 for dead units
    assignment: tuple[np.ndarray, np.ndarray] | None = None  # Hungarian (rows, columns), set on first use


def pair_cross(source: FoldBlock, target: FoldBlock) -> PairCross:
    """Compute the training cross-covariance and correlation of two blocks."""
    covariance = source.train_centred.T @ target.train_centred
    m = source.train_centred.shape[0]
    correlation = covariance / (m * np.outer(source.train_std, target.train_std))
    return PairCross(covariance=covariance, correlation=correlation)


def transposed(cross: PairCross) -> PairCross:
    """Return the cross-statistics with source and target swapped."""
    return PairCross(covariance=cross.covariance.T, correlation=cross.correlation.T)


@dataclass
class FullBlock:
    """One seed's centred data over all samples, for the metrics without folds."""

    data: np.ndarray  # n × p as given (float64)
    centred: np.ndarray  # n × p, dead columns zero
    dead: np.ndarray
    side: str  # name used in warnings, such as "X" or "seed 0"
    context: str | None = None
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def all_dead(self) -> bool:
        return bool(self.dead.all())


def build_full_block(data: np.ndarray, side: str, context: str | None = None, scale: float = 1.0) -> FullBlock:
    """Centre ``data`` times ``scale`` on all samples (in float64) and mark its dead units."""
    data = np.multiply(data, scale, dtype=np.float64)
    centred = data - data.mean(axis=0)
    std = np.sqrt(np.mean(centred * centred, axis=0))
    dead = dead_units(data, std)
    centred[:, dead] = 0.0
    return FullBlock(data=data, centred=centred, dead=dead, side=side, context=context)


@dataclass
class FullPair:
    """Cross-statistics of two seeds over all samples, computed on first use."""

    first: FullBlock
    second: FullBlock
    cache: dict = field(default_factory=dict, repr=False)

    def covariance(self) -> np.ndarray:
        """Return XcᵀYc (p × q) over all samples."""
        if "covariance" not in self.cache:
            self.cache["covariance"] = self.first.centred.T @ self.second.centred
        return self.cache["covariance"]

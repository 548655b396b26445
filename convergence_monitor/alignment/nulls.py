"""Chance baselines: a metric's scores on rotated or shuffled copies of Y.

``kind="rotated"`` scores X against Y R, with R a Haar-random q × q
orthogonal matrix. Metrics invariant to rotation (linear regression,
Procrustes, CKA) do not move; permutation and soft matching drop when the
units of Y form a privileged basis. ``kind="shuffled"`` scores X against Y
with its rows permuted, which breaks the sample correspondence and gives
each metric's chance level.

With K null draws the one-sided p-value is (1 + #{null ≥ observed}) / (K + 1)
for a score, and (1 + #{null ≤ observed}) / (K + 1) for a distance. A null
value within ``TIE_RTOL`` (relative) of the observed one counts as a tie,
so rounding cannot make a metric that ignores the null transformation look
significant.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._engine import UndefinedScoreWarning
from ._validation import fail, to_float64, with_context
from .registry import get_metric

NULL_KINDS = ("rotated", "shuffled")
TIE_RTOL = 1e-12


@dataclass(frozen=True)
class NullResult:
    """A metric's observed value and its null draws."""

    metric: str
    kind: str
    observed: float
    null: np.ndarray  # one value per draw
    p_value: float
    higher_is_better: bool


def haar_orthogonal(size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a size × size orthogonal matrix from the Haar measure.

    QR of a Gaussian matrix, with each column of Q multiplied by the sign of
    the matching diagonal entry of R so the distribution is uniform.
    """
    gaussian = rng.standard_normal((size, size))
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))


def null_scores(
    metric: str,
    X: Any,
    Y: Any,
    *,
    kind: str = "rotated",
    draws: int = 100,
    seed: int = 0,
    fold_seed: int = 0,
    context: str | None = None,
    **options: Any,
) -> NullResult:
    """Score X against ``draws`` rotated or shuffled copies of Y and compare with the observed score.

    Parameters
    ----------
    metric : str
        Registered metric name.
    X, Y : array-like or torch.Tensor, shapes (n, p) and (n, q)
    kind : {"rotated", "shuffled"}
        Rotate Y by a Haar-random orthogonal matrix, or permute its rows.
    draws : int
        Number of null draws K.
    seed : int
        Seed of the generator for the rotations or row permutations.
    fold_seed : int
        Seed of the cross-validation folds, passed as the metric's ``seed``
        when it uses folds; the same folds serve the observed and null scores.
    context : str, optional
        Text prefixed to error and warning messages.
    **options
        Further options of the metric, for example ``folds`` or ``alphas``.
    """
    info = get_metric(metric, context)
    if kind not in NULL_KINDS:
        raise fail(f"null kind must be one of {', '.join(NULL_KINDS)}; found {kind!r}", context)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise fail(f"draws must be a positive integer; found {draws!r}", context)

    x = to_float64(X, "X", context)
    y = to_float64(Y, "Y", context)
    metric_options = dict(options, context=context)
    if info.uses_folds:
        metric_options["seed"] = fold_seed

    observed = float(info.function(x, y, **metric_options))

    rng = np.random.default_rng(seed)
    null = np.empty(draws)
    for draw in range(draws):
        if kind == "rotated":
            y_null = y @ haar_orthogonal(y.shape[1], rng)
        else:
            y_null = y[rng.permutation(y.shape[0])]
        null[draw] = info.function(x, y_null, **metric_options)

    # An undefined observed score has no p-value, and undefined null draws are left out of the count:
    # counting them as "not extreme" would make a broken metric look significant.
    finite_null = null[np.isfinite(null)]
    if not np.isfinite(observed) or finite_null.size == 0:
        warnings.warn(with_context(
            f"{metric} null ({kind}): the observed score is {observed} and {finite_null.size} of {draws} null "
            "draws are finite, so the p-value is NaN", context), UndefinedScoreWarning, stacklevel=2)
        p_value = float("nan")
    else:
        if finite_null.size < draws:
            warnings.warn(with_context(
                f"{metric} null ({kind}): {draws - finite_null.size} of {draws} null draws are NaN and are left "
                "out of the p-value", context), UndefinedScoreWarning, stacklevel=2)
        tolerance = TIE_RTOL * max(1.0, abs(observed))
        if info.higher_is_better:
            extreme = finite_null >= observed - tolerance
        else:
            extreme = finite_null <= observed + tolerance
        p_value = (1.0 + np.count_nonzero(extreme)) / (finite_null.size + 1.0)
    return NullResult(
        metric=metric,
        kind=kind,
        observed=observed,
        null=null,
        p_value=float(p_value),
        higher_is_better=info.higher_is_better,
    )

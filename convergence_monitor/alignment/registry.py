"""Registry of the alignment metrics: names, functions and properties.

Each :class:`MetricInfo` states what the metric returns (a score, where 1
means aligned, or a distance, where 0 does), the transformations it ignores,
and whether it is cross-validated. :func:`score` dispatches by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import cka, linear, matching, procrustes, rsa
from ._engine import Job
from ._validation import check_alphas, check_symmetric, fail


@dataclass(frozen=True)
class MetricInfo:
    """Description of one registered alignment metric."""

    name: str
    function: Callable[..., float]
    kind: str  # "score" (1 is aligned) or "distance" (0 is aligned)
    higher_is_better: bool
    invariances: tuple[str, ...]
    uses_folds: bool
    options: tuple[str, ...]  # metric-specific keyword options, besides folds, seed and context
    summary: str


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo(
            name="linear_regression",
            function=linear.linear_regression_score,
            kind="score",
            higher_is_better=True,
            invariances=("per-unit scale", "translation", "invertible linear map (approximately, see docs)"),
            uses_folds=True,
            options=("alphas", "symmetric"),
            summary="held-out Pearson r of ridge predictions, penalty chosen by GCV on the training fold",
        ),
        MetricInfo(
            name="procrustes",
            function=procrustes.procrustes_score,
            kind="score",
            higher_is_better=True,
            invariances=(
                "rotation and reflection of the source (directional score)",
                "signed permutation of units",
                "translation",
                "isotropic scale",
            ),
            uses_folds=True,
            options=("symmetric",),
            summary="held-out Pearson r after the best training-fold orthogonal map",
        ),
        MetricInfo(
            name="procrustes_distance",
            function=procrustes.procrustes_distance,
            kind="distance",
            higher_is_better=False,
            invariances=("rotation", "reflection", "translation", "isotropic scale"),
            uses_folds=False,
            options=(),
            summary="angular Procrustes distance in radians, in [0, pi/2]",
        ),
        MetricInfo(
            name="permutation",
            function=matching.permutation_score,
            kind="score",
            higher_is_better=True,
            invariances=("unit order", "per-unit scale", "translation"),
            uses_folds=True,
            options=(),
            summary="held-out Pearson r of units matched one-to-one on the training fold",
        ),
        MetricInfo(
            name="soft_matching",
            function=matching.soft_matching_score,
            kind="score",
            higher_is_better=True,
            invariances=("unit order", "per-unit scale", "translation"),
            uses_folds=True,
            options=(),
            summary="held-out Pearson r weighted by the training-fold optimal transport plan",
        ),
        MetricInfo(
            name="linear_cka",
            function=cka.linear_cka,
            kind="score",
            higher_is_better=True,
            invariances=("rotation", "reflection", "translation", "isotropic scale"),
            uses_folds=False,
            options=(),
            summary="linear CKA with the biased HSIC estimator",
        ),
        MetricInfo(
            name="debiased_cka",
            function=cka.debiased_cka,
            kind="score",
            higher_is_better=True,
            invariances=("rotation", "reflection", "translation", "isotropic scale"),
            uses_folds=False,
            options=(),
            summary="linear CKA with the unbiased HSIC estimator; can be negative",
        ),
        MetricInfo(
            name="rsa",
            function=rsa.rsa_score,
            kind="score",
            higher_is_better=True,
            invariances=("unit order", "per-sample scale", "per-sample shift", "monotone map of dissimilarities"),
            uses_folds=False,
            options=(),
            summary="Spearman correlation of correlation-distance dissimilarity matrices",
        ),
    )
}

# Per metric: the fold or full-data kernel behind its public function, the input check, and the
# per-seed cache filler that runs before the pairs of a fold.
_KERNELS: dict[str, tuple[Callable[..., float], Callable[..., None] | None, Callable[..., None] | None]] = {
    "linear_regression": (linear.fold_kernel, None, linear.prepare_fold_block),
    "procrustes": (procrustes.fold_kernel, None, None),
    "procrustes_distance": (procrustes.distance_kernel, None, None),
    "permutation": (matching.permutation_kernel, matching.check_equal_widths, None),
    "soft_matching": (matching.soft_matching_kernel, None, None),
    "linear_cka": (cka.linear_cka_kernel, None, None),
    "debiased_cka": (cka.debiased_cka_kernel, cka.check_debiased_samples, None),
    "rsa": (rsa.rsa_kernel, rsa.check_rsa_shapes, None),
}


def list_metrics() -> tuple[str, ...]:
    """Return the names of the registered metrics."""
    return tuple(METRICS)


def get_metric(name: str, context: str | None = None) -> MetricInfo:
    """Return the :class:`MetricInfo` of ``name``, or raise ValueError listing the accepted names."""
    if name not in METRICS:
        raise fail(f"unknown alignment metric {name!r}; expected one of {', '.join(METRICS)}", context)
    return METRICS[name]


def make_job(name: str, options: Mapping[str, Any] | None, context: str | None) -> Job:
    """Build the evaluation job of metric ``name`` with its checked options."""
    info = get_metric(name, context)
    options = dict(options or {})
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        accepted = ", ".join(info.options) or "none"
        raise fail(f"metric {name!r} does not take options {unknown}; accepted options: {accepted}", context)

    if "alphas" in options:
        options["alphas"] = check_alphas(options["alphas"], context)
    if "symmetric" in options:
        options["symmetric"] = check_symmetric(options["symmetric"], context)

    kernel, check, prepare = _KERNELS[name]
    return Job(name=name, kernel=kernel, uses_folds=info.uses_folds, options=options, check=check, prepare=prepare)


def score(name: str, X: Any, Y: Any, **options: Any) -> float:
    """Evaluate the registered metric ``name`` on X and Y.

    ``options`` go to the metric's function: ``folds`` and ``seed`` for the
    cross-validated metrics, ``context`` for all, and the metric's own
    options listed in ``METRICS[name].options``.
    """
    info = get_metric(name, options.get("context"))
    accepted = set(info.options) | {"context"} | ({"folds", "seed"} if info.uses_folds else set())
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise fail(
            f"metric {name!r} does not take options {unknown}; accepted options: {', '.join(sorted(accepted))}",
            options.get("context"),
        )
    return info.function(X, Y, **options)

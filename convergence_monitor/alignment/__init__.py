"""Cross-seed representational alignment metrics, independent of any training loop.

Every function takes X (n × p) and Y (n × q), samples × units, as numpy
arrays or torch tensors of any float dtype on any device, computes in
float64 and returns a Python float. Scores are 1 for representations that
are aligned under the metric's invariances and about 0 for unrelated ones;
``procrustes_distance`` is a distance (0 when aligned).

The cross-validated metrics (``linear_regression_score``,
``procrustes_score``, ``permutation_score``, ``soft_matching_score``) fit
on the training folds of a seeded k-fold split and score on the held-out
fold. :func:`score_pairs` evaluates several metrics on every pair of seeds
of a layer, sharing per-seed work, with results identical to the
single-pair functions.
"""

from ._engine import UndefinedScoreWarning
from ._stats import DEAD_RTOL, DeadUnitWarning, make_folds
from ._validation import AlignmentInputError
from .batch import score_pairs
from .cka import debiased_cka, linear_cka
from .linear import DEFAULT_RELATIVE_ALPHAS, linear_regression_score
from .matching import permutation_score, soft_matching_score
from .nulls import NullResult, haar_orthogonal, null_scores
from .procrustes import procrustes_distance, procrustes_score
from .registry import METRICS, MetricInfo, get_metric, list_metrics, score
from .rsa import rsa_score

__all__ = [
    "DEAD_RTOL",
    "DEFAULT_RELATIVE_ALPHAS",
    "METRICS",
    "AlignmentInputError",
    "DeadUnitWarning",
    "MetricInfo",
    "NullResult",
    "UndefinedScoreWarning",
    "debiased_cka",
    "get_metric",
    "haar_orthogonal",
    "linear_cka",
    "linear_regression_score",
    "list_metrics",
    "make_folds",
    "null_scores",
    "permutation_score",
    "procrustes_distance",
    "procrustes_score",
    "rsa_score",
    "score",
    "score_pairs",
    "soft_matching_score",
]

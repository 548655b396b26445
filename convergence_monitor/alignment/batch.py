"""All-pairs evaluation of several metrics for one layer, sharing per-seed work.

This is the path for a training callback that scores every pair of seeds at
once. Per fold it computes each seed's training means, standard deviations,
centred and standardized blocks and (for ridge regression) one
eigendecomposition of the standardized training Gram matrix, then each
pair's training cross-covariance once for Procrustes, permutation, soft
matching and ridge regression. The single-pair functions run the same code
on a two-seed mapping, so both paths return bitwise-identical numbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _engine
from ._validation import fail
from .registry import get_metric, make_job


def score_pairs(
    features: Mapping[Hashable, Any],
    metrics: str | Sequence[str],
    *,
    folds: int = 5,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    context: str | None = None,
    workers: int = 1,
) -> dict[tuple[Hashable, Hashable], dict[str, float]]:
    """Score every unordered pair of seeds of one layer under several metrics.

    Parameters
    ----------
    features : Mapping from seed label to array-like or torch.Tensor
        Each seed's n × p_seed matrix (samples × units) for one layer. The
        sample count must agree across seeds, but widths may differ.
    metrics : str or sequence of str
        Registered metric names (see :func:`list_metrics`).
    folds, seed : int
        Cross-validation folds and their seed, shared by every pair and
        cross-validated metric.
    options : Mapping from metric name to keyword options, optional
        Metric-specific options, for example
        ``{"linear_regression": {"alphas": [1.0]}}``.
    context : str, optional
        Text prefixed to error and warning messages, for example
        ``"layer 'layer1.0.conv1'"``.
    workers : int
        Threads that score the seed pairs of each cross-validation fold
        concurrently, the calling thread included. The scores do not depend
        on it: each pair runs the same code, warnings are issued in a fixed
        order, and an error is the one a single thread would raise.

    Returns
    -------
    dict
        ``{(label_a, label_b): {metric: value}}`` for every pair a < b in
        mapping order, metrics in the order requested.
    """
    if len(features) < 2:
        raise fail(f"score_pairs needs at least 2 seeds; found {len(features)}", context)

    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise fail("score_pairs needs at least one metric name; found none", context)
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise fail(f"each metric may be requested once; found repeats of {duplicated}", context)
    for name in names:
        get_metric(name, context)

    options = dict(options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise fail(f"options were given for metrics that were not requested: {stray}; requested: {names}", context)

    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise fail(f"workers must be a positive integer; found {workers!r}", context)
    workers = int(workers)
    jobs = [make_job(name, options.get(name), context) for name in names]
    side_names = {label: f"seed {label}" for label in features}
    arrays, _ = _engine.convert_inputs(features, side_names, context)
    return _engine.evaluate(arrays, side_names, jobs, folds, seed, context, workers)

"""Evaluation loop shared by the single-pair functions and :func:`score_pairs`.

Both paths run the same code on the same per-seed statistics, so a
single-pair function and the batched call return bitwise-identical numbers.
For the cross-validated metrics the loop runs fold by fold: it builds each
seed's :class:`~._stats.FoldBlock` once, then the training cross-statistics
of each pair once, and hands them to every requested metric.
"""

from __future__ import annotations

import itertools
import warnings
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._stats import (
    DeadUnitWarning,
    FullPair,
    build_fold_block,
    build_full_block,
    make_folds,
    pair_cross,
    power_of_two_scale,
)
from ._validation import check_fold_settings, check_same_samples, to_float_array, with_context


class UndefinedScoreWarning(RuntimeWarning):
    """A metric returned NaN because its inputs leave it undefined."""


@dataclass(frozen=True)
class Job:
    """One metric to evaluate: its kernel, whether it uses folds, its options and its input check.

    A fold kernel is called as ``kernel(first, second, cross, **options)`` with
    two :class:`~._stats.FoldBlock` and a :class:`~._stats.PairCross` and
    returns the score on that fold. A full-data kernel is called as
    ``kernel(first, second, pair, **options)`` with two
    :class:`~._stats.FullBlock` and a :class:`~._stats.FullPair`.
    ``check(n, widths, context)`` raises on inputs the metric rejects.
    ``prepare(block)`` fills a fold kernel's per-seed caches on a
    :class:`~._stats.FoldBlock` before any pair of the fold is scored.
    """

    name: str
    kernel: Callable[..., float]
    uses_folds: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[int, Mapping[str, int], str | None], None] | None = None
    prepare: Callable[[Any], None] | None = None


def convert_inputs(
    features: Mapping[Hashable, Any], side_names: Mapping[Hashable, str], context: str | None
) -> tuple[dict[Hashable, np.ndarray], int]:
    """Check every input and that the sample counts agree.

    Float inputs keep their dtype here. Each fold or full-data block is
    converted to float64 when it is built, so memory at the peak contains a
    float64 copy of one block, not of every input.
    """
    arrays = {label: to_float_array(value, side_names[label], context) for label, value in features.items()}
    n = check_same_samples({side_names[label]: array.shape for label, array in arrays.items()}, context)
    return arrays, n


def evaluate(
    arrays: Mapping[Hashable, np.ndarray],
    side_names: Mapping[Hashable, str],
    jobs: list[Job],
    folds: int,
    seed: int,
    context: str | None,
    workers: int = 1,
) -> dict[tuple[Hashable, Hashable], dict[str, float]]:
    """Return ``{(label_a, label_b): {metric: value}}`` for every unordered pair in mapping order.

    ``workers`` threads score the pairs of each fold concurrently; the result does not depend on it.
    """
    labels = list(arrays)
    pairs = list(itertools.combinations(labels, 2))
    n = next(iter(arrays.values())).shape[0]
    widths = {side_names[label]: arrays[label].shape[1] for label in labels}

    # Input checks run before any arithmetic, so a bad call fails fast.
    for job in jobs:
        if job.check is not None:
            job.check(n, widths, context)
    if any(job.uses_folds for job in jobs):
        check_fold_settings(n, folds, seed, context)

    values: dict[tuple[Hashable, Hashable], dict[str, float]] = {pair: {} for pair in pairs}
    scales = {label: power_of_two_scale(array) for label, array in arrays.items()}
    full_jobs = [job for job in jobs if not job.uses_folds]
    fold_jobs = [job for job in jobs if job.uses_folds]
    if full_jobs:
        _evaluate_full(arrays, scales, side_names, pairs, full_jobs, values, context)
    if fold_jobs:
        _evaluate_folds(arrays, scales, side_names, pairs, fold_jobs, folds, seed, values, context, workers)

    # Report metrics in the order they were requested.
    return {pair: {job.name: values[pair][job.name] for job in jobs} for pair in pairs}


def _evaluate_full(arrays, scales, side_names, pairs, jobs, values, context) -> None:
    blocks = {}
    for label, array in arrays.items():
        blocks[label] = build_full_block(array, side=side_names[label], context=context, scale=scales[label])

    for pair in pairs:
        first, second = blocks[pair[0]], blocks[pair[1]]
        constant = [side_names[label] for label in pair if blocks[label].all_dead]
        if constant:
            _warn_undefined(constant, "over all samples", [job.name for job in jobs], context)
            values[pair].update({job.name: float("nan") for job in jobs})
            continue

        full_pair = FullPair(first, second)
        for job in jobs:
            values[pair][job.name] = float(job.kernel(first, second, full_pair, **job.options))


def _evaluate_folds(arrays, scales, side_names, pairs, jobs, folds, seed, values, context, workers) -> None:
    n = next(iter(arrays.values())).shape[0]
    names = [job.name for job in jobs]
    per_fold = {pair: {name: [] for name in names} for pair in pairs}
    undefined: set = set()
    preparers = [job.prepare for job in jobs if job.prepare is not None]

    for fold, (training, held_out) in enumerate(make_folds(n, folds, seed)):
        # The calling thread builds each seed's fold statistics once; every pair and metric shares them.
        notes: list[str] = []
        blocks = {
            label: build_fold_block(
                array, training, held_out, fold, folds, side_names[label], context, notes, scales[label]
            )
            for label, array in arrays.items()
        }
        for message in notes:
            warnings.warn(message, DeadUnitWarning, stacklevel=4)

        live = []
        for pair in pairs:
            if pair in undefined:
                continue
            sides = [side_names[label] for label in pair if blocks[label].all_dead]
            if sides:
                where = f"on the training or held-out samples of fold {fold + 1} of {folds}"
                _warn_undefined(sides, where, names, context)
                undefined.add(pair)
                continue
            live.append(pair)

        # Per-seed caches are filled before the pairs run, so no two threads fill the same one.
        used = [label for label in arrays if any(label in pair for pair in live)]
        if preparers:
            _run_shared(lambda index: [prepare(blocks[used[index]]) for prepare in preparers], len(used), workers)

        def score_pair(index: int) -> dict[str, float]:
            first, second = blocks[live[index][0]], blocks[live[index][1]]
            # One training cross-covariance per pair serves every fold metric.
            cross = pair_cross(first, second)
            return {job.name: job.kernel(first, second, cross, **job.options) for job in jobs}

        for pair, scores in zip(live, _run_shared(score_pair, len(live), workers)):
            for name in names:
                per_fold[pair][name].append(scores[name])

    for pair in pairs:
        for name in names:
            if pair in undefined:
                values[pair][name] = float("nan")
            else:
                values[pair][name] = float(np.mean(per_fold[pair][name]))


def _run_shared(task: Callable[[int], Any], count: int, workers: int) -> list:
    """Return ``[task(0), ..., task(count - 1)]``, computed by the calling thread and ``workers - 1`` helpers.

    The tasks are independent, and NumPy, LAPACK and the matching solvers
    release the GIL, so the threads use several cores. Each task runs the
    same code whichever thread runs it.

    The calling thread takes tasks too, and builds the fold statistics
    alone. The reason is memory: glibc gives each thread its own malloc
    arena, and a new arena cannot reuse what training freed in the calling
    thread's arena. The less the helper threads allocate, the lower the
    peak resident size.
    """
    helpers = min(workers, count) - 1
    if helpers < 1:
        return [task(index) for index in range(count)]
    results: list = [None] * count
    errors: dict[int, BaseException] = {}
    indices = iter(range(count))
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                # Tasks start in index order and none starts after a failure, so every task before
                # the first failing one completes, and the error raised is the one a loop would raise.
                index = None if errors else next(indices, None)
            if index is None:
                return
            try:
                results[index] = task(index)
            except BaseException as error:  # noqa: BLE001 - re-raised below, in the calling thread
                with lock:
                    errors[index] = error

    with ThreadPoolExecutor(max_workers=helpers) as pool:
        futures = [pool.submit(drain) for _ in range(helpers)]
        drain()
        wait(futures)
    if errors:
        raise errors[min(errors)]
    return results


def _warn_undefined(sides: list[str], where: str, metrics: list[str], context: str | None) -> None:
    message = (
        f"every unit of {' and '.join(sides)} is constant {where}, so correlations are undefined; "
        f"{', '.join(metrics)} returned NaN"
    )
    warnings.warn(with_context(message, context), UndefinedScoreWarning, stacklevel=5)


def score_single_pair(
    X: Any,
    Y: Any,
    name: str,
    kernel: Callable[..., float],
    uses_folds: bool,
    options: Mapping[str, Any],
    folds: int,
    seed: int,
    context: str | None,
    check: Callable[[int, Mapping[str, int], str | None], None] | None = None,
) -> float:
    """Evaluate one metric on one pair through the same loop as :func:`score_pairs`."""
    side_names = {"X": "X", "Y": "Y"}
    arrays, _ = convert_inputs({"X": X, "Y": Y}, side_names, context)
    job = Job(name=name, kernel=kernel, uses_folds=uses_folds, options=options, check=check)
    return evaluate(arrays, side_names, [job], folds, seed, context)[("X", "Y")][name]

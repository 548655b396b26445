"""Time one alignment round of the core against the reference stack, and its growth.

A round scores every pair of seeds of every layer with linear regression,
Procrustes, permutation, soft matching and linear CKA, as the training
callback does at one step. Features are fixed random low-rank data plus
noise (no dead units), so the reference stack applies.

    python bench/alignment_round.py            # n = 2000, p = q = 512, 4 seeds × 2 layers
    python bench/alignment_round.py --quick    # smaller sizes, for a smoke run

Prints: (a) core and reference times per repeat, the median speed-up and the
maximum absolute difference between their scores; (b) core round time for
growing n with the exponent of a log-log fit, and time per pair for 2, 4 and
8 seeds. Timings depend on the machine and its load; nothing is asserted.
BLAS runs with ``--threads`` threads (default 1) for both stacks, because
multithreaded BLAS on a loaded machine makes timings of small products
erratic.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference import reference_pairs  # noqa: E402

from convergence_monitor.alignment import score_pairs  # noqa: E402

METRICS = ["linear_regression", "procrustes", "permutation", "soft_matching", "linear_cka"]


def make_layer(rng: np.random.Generator, n: int, width: int, seeds: int, rank: int = 32) -> dict[int, np.ndarray]:
    """Return seed → n × width features sharing a rank-``rank`` signal, each with its own mixing and noise."""
    signal = rng.standard_normal((n, rank))
    layer = {}
    for seed in range(seeds):
        mixing = rng.standard_normal((rank, width)) / np.sqrt(rank)
        layer[seed] = signal @ mixing + rng.standard_normal((n, width))
    return layer


def make_round(n: int, width: int, seeds: int, layers: int, seed: int = 0) -> dict[str, dict[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {f"layer{index}": make_layer(rng, n, width, seeds) for index in range(layers)}


def core_round(features):
    return {layer: score_pairs(by_seed, METRICS) for layer, by_seed in features.items()}


def reference_round(features):
    return {layer: reference_pairs(by_seed, METRICS) for layer, by_seed in features.items()}


def timed(function, *arguments):
    start = time.perf_counter()
    result = function(*arguments)
    return time.perf_counter() - start, result


def max_difference(core, reference) -> float:
    worst = 0.0
    for layer, pairs in reference.items():
        for pair, scores in pairs.items():
            for name, value in scores.items():
                worst = max(worst, abs(core[layer][pair][name] - value))
    return worst


def compare(n: int, width: int, seeds: int, layers: int, repeats: int) -> None:
    features = make_round(n, width, seeds, layers)
    print(f"(a) one round: n={n}, p=q={width}, {seeds} seeds x {layers} layers, metrics {', '.join(METRICS)}; "
          f"core: score_pairs with workers=1; reference: scikit-learn Ridge, scipy orthogonal_procrustes and "
          f"linear_sum_assignment, POT emd, one pair at a time (bench/reference.py)")
    ratios = []
    difference = 0.0
    for repeat in range(repeats):
        core_seconds, core = timed(core_round, features)
        reference_seconds, reference = timed(reference_round, features)
        ratios.append(reference_seconds / core_seconds)
        difference = max(difference, max_difference(core, reference))
        print(f"    repeat {repeat + 1}: core {core_seconds:.2f} s, reference {reference_seconds:.2f} s, "
              f"ratio {ratios[-1]:.1f}")
    print(f"    median speed-up {statistics.median(ratios):.1f}x, max |core - reference| = {difference:.2e}")


def growth(sizes: list[int], width: int, seed_counts: list[int], layers: int) -> None:
    print(f"(b) growth in n: 4 seeds x {layers} layers, p=q={width}")
    seconds = []
    for n in sizes:
        elapsed, _ = timed(core_round, make_round(n, width, 4, layers))
        seconds.append(elapsed)
        print(f"    n={n}: {elapsed:.2f} s")
    exponent = np.polyfit(np.log(sizes), np.log(seconds), 1)[0]
    print(f"    fitted exponent in n: {exponent:.2f}")

    n = sizes[len(sizes) // 2]
    print(f"    growth in seeds: n={n}, p=q={width}, {layers} layers")
    for count in seed_counts:
        elapsed, _ = timed(core_round, make_round(n, width, count, layers))
        pairs = count * (count - 1) // 2 * layers
        print(f"    {count} seeds: {elapsed:.2f} s per round, {elapsed / pairs * 1000:.0f} ms per pair and layer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use n = 500 and p = 128 (smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the core-vs-reference round")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for both stacks")
    arguments = parser.parse_args()
    threadpool_limits(limits=arguments.threads)
    print(f"BLAS threads: {arguments.threads}")

    if arguments.quick:
        compare(n=500, width=128, seeds=4, layers=2, repeats=arguments.repeats)
        growth([250, 500, 1000, 2000], width=128, seed_counts=[2, 4, 8], layers=2)
    else:
        compare(n=2000, width=512, seeds=4, layers=2, repeats=arguments.repeats)
        growth([1000, 2000, 4000, 8000], width=512, seed_counts=[2, 4, 8], layers=2)


if __name__ == "__main__":
    main()

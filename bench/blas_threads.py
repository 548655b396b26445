"""Metric-round time with 1 BLAS thread against the library default, after importing torch.

    python bench/blas_threads.py [--quick]

``ConvergenceCallback(blas_threads=1)`` is the default because OpenBLAS
threads and PyTorch's OpenMP threads compete for the same cores. This
script times ``score_pairs`` on random features for 4 seeds with one BLAS
thread and with the default thread count, alternating the two, and prints
the median ratio with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch  # noqa: F401 - importing torch loads its OpenMP runtime, as in a training process
from threadpoolctl import threadpool_info, threadpool_limits

from convergence_monitor.alignment import score_pairs
from convergence_monitor.callback import DEFAULT_METRICS


def time_round(features, threads: int | None) -> float:
    with threadpool_limits(threads, user_api="blas"):
        started = time.perf_counter()
        score_pairs(features, DEFAULT_METRICS)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 units and 2 repeats instead of 512 and 3")
    args = parser.parse_args()
    units, repeats = (256, 2) if args.quick else (512, 3)
    warnings.simplefilter("ignore")

    rng = np.random.default_rng(0)
    features = {str(seed): rng.standard_normal((1000, units)) for seed in range(4)}
    default_threads = max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
    ratios = []
    for repeat in range(repeats):
        one = time_round(features, 1)
        default = time_round(features, None)
        ratios.append(default / one)
        print(f"repeat {repeat + 1}: 1 thread {one:.2f} s, {default_threads} threads {default:.2f} s, "
              f"ratio {default / one:.2f}, load {os.getloadavg()[0]:.1f}")
    print(f"median ratio default / 1 thread, 4 seeds, n=1000, p={units}: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()

"""Measure the peak memory that ConvergenceCallback adds, against the size of the features it captures.

    python bench/memory.py            # 3 alternating pairs of child processes per figure
    python bench/memory.py --quick    # 1 pair

Every measurement is the peak resident set size (``ru_maxrss``) of a fresh
child process running this script with ``--child <case>``. Both children
of a pair import the same modules, so their difference is the memory the
measured work adds.

(a) A 2-step run (4 resnet10t seeds, synthetic 28 × 28 images, batch 64,
1,000 probe images, default layers and metrics) with
``ConvergenceCallback(first_epoch_points=1)`` (probes at steps 0, 1 and 2)
minus the same run without the callback, divided by the feature store:
seeds × Σ units over layers × probe images × 4 bytes (float32).

(b) One layer of 200,000 units (a 320-channel convolution on 25 × 25
inputs, flattened) captured for 2 seeds on 200 probe images and scored
with ``score_pairs``, with ``max_units=1024`` (the callback's default)
minus a child that only runs the same forward passes. The uncapped
case is run only when ``--uncapped`` is given, because the metric core's
p × q float64 matrices alone would need 200,000² × 8 bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SyntheticDataModule, load_average, median, print_machine, quiet_lightning  # noqa: E402

from convergence_monitor import ConvergenceCallback, MultiSeedModule, alignment  # noqa: E402
from convergence_monitor.callback import DEFAULT_METRICS  # noqa: E402
from convergence_monitor.capture import capture_features  # noqa: E402

SEEDS = [0, 1, 2, 3]
WIDE_CHANNELS, WIDE_SIZE = 320, 25  # 320 × 25 × 25 = 200,000 units after flattening
WIDE_SAMPLES = 200
MAX_UNITS = 1024


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_run(with_callback: bool, metric_workers: int | None) -> dict:
    import pytorch_lightning as pl

    quiet_lightning()
    module = MultiSeedModule(arch="resnet10t", seeds=SEEDS, in_chans=1, num_classes=10, lr_schedule="constant")
    data = SyntheticDataModule(steps_per_epoch=2, size=28, num_seeds=len(SEEDS), batch_size=64, probe_size=1000)
    callbacks = [ConvergenceCallback(first_epoch_points=1, metric_workers=metric_workers)] if with_callback else []
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=root,
            max_epochs=1, callbacks=callbacks,
        )
        trainer.fit(module, datamodule=data)
    result = {"peak_rss": peak_rss_bytes()}
    if with_callback:
        callback = callbacks[0]
        # Layer widths from two images, after the peak has been read, so this capture cannot raise it.
        images = callback.probe_sets[0].images[:2]
        features, _ = capture_features(module.models[0], images, callback.layers, max_units=callback.max_units)
        units = sum(matrix.shape[1] for matrix in features.values())
        result.update(units=units, samples=len(callback.probe_sets[0]), probe_steps=callback.timings["probe_steps"],
                      store_bytes=len(SEEDS) * units * len(callback.probe_sets[0]) * 4,
                      metric_workers=callback.metric_workers)
    return result


class WideNet(nn.Module):
    """A convolution whose flattened output, the layer ``wide``, has 200,000 units."""

    def __init__(self, seed: int):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, WIDE_CHANNELS, 3, padding=1)
        self.wide = nn.Flatten()
        self.fc = nn.Linear(WIDE_CHANNELS, 10)
        torch.random.set_rng_state(generator_state)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = self.wide(torch.relu(self.conv(images)))
        pooled = flat.view(-1, WIDE_CHANNELS, WIDE_SIZE * WIDE_SIZE).mean(dim=2)
        return self.fc(pooled)


def child_wide(case: str, metrics: list[str]) -> dict:
    models = [WideNet(seed) for seed in (0, 1)]
    images = torch.randn(WIDE_SAMPLES, 1, WIDE_SIZE, WIDE_SIZE, generator=torch.Generator().manual_seed(0))
    if case == "wide-forward":
        with torch.no_grad():
            for model in models:
                model(images)
        return {"peak_rss": peak_rss_bytes()}

    max_units = MAX_UNITS if case == "wide-capped" else None
    features = {}
    for seed, model in enumerate(models):
        captured, _ = capture_features(model, images, ["wide"], max_units=max_units, seed=0)
        features[seed] = captured["wide"]
    width = int(features[0].shape[1])
    scores = alignment.score_pairs(features, metrics, folds=5, seed=0)
    return {"peak_rss": peak_rss_bytes(), "width": width, "scores": scores[(0, 1)]}


def run_child(case: str, metrics: list[str], metric_workers: int | None = None) -> dict:
    arguments = [sys.executable, __file__, "--child", case, "--wide-metrics", ",".join(metrics)]
    if metric_workers is not None:
        arguments += ["--metric-workers", str(metric_workers)]
    completed = subprocess.run(arguments, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def mib(count: float) -> str:
    return f"{count / 2**20:.1f} MiB"


def measure_run(pairs: int, metric_workers: int | None) -> None:
    print(f"\n(a) peak RSS of a 2-step run with ConvergenceCallback minus without ({pairs} alternating pairs)")
    ratios = []
    for index in range(1, pairs + 1):
        without = run_child("run-without", [])
        with_ = run_child("run-with", [], metric_workers)
        added = with_["peak_rss"] - without["peak_rss"]
        ratios.append(added / with_["store_bytes"])
        print(f"    pair {index}: without {mib(without['peak_rss'])}, with {mib(with_['peak_rss'])} "
              f"({with_['probe_steps']} probe steps), added {mib(added)}; feature store {len(SEEDS)} seeds x "
              f"{with_['units']} units x {with_['samples']} images x 4 B = {mib(with_['store_bytes'])}; "
              f"{with_['metric_workers']} metric worker threads; "
              f"ratio {ratios[-1]:.2f}, load {load_average()}")
    print(f"    median added / feature store {median(ratios):.2f} (target <= 1.5); load {load_average()}")


def measure_wide(pairs: int, metrics: list[str], uncapped: bool) -> None:
    width = WIDE_CHANNELS * WIDE_SIZE ** 2
    print(f"\n(b) one layer of {width:,} units, 2 seeds, n = {WIDE_SAMPLES}, "
          f"metrics {', '.join(metrics)}: peak RSS of capture + score_pairs minus forward passes only")
    added_capped = []
    for index in range(1, pairs + 1):
        baseline = run_child("wide-forward", metrics)
        capped = run_child("wide-capped", metrics)
        added_capped.append(capped["peak_rss"] - baseline["peak_rss"])
        scores = ", ".join(f"{name} {value:.3f}" for name, value in capped["scores"].items())
        print(f"    pair {index}: forward only {mib(baseline['peak_rss'])}, capped at {capped['width']} units "
              f"{mib(capped['peak_rss'])}, added {mib(added_capped[-1])}; scores {scores}; load {load_average()}")
    print(f"    median added with max_units={MAX_UNITS}: {mib(median(added_capped))}")

    features = 2 * WIDE_SAMPLES * width * 8
    cross = width * width * 8
    if uncapped:
        result = run_child("wide-uncapped", metrics)
        print(f"    uncapped: {mib(result['peak_rss'])} peak RSS")
    else:
        print(f"    uncapped: not run; its float64 features alone are 2 x {WIDE_SAMPLES} x {width:,} x 8 B = "
              f"{mib(features)}, and one {width:,} x {width:,} float64 unit-by-unit matrix (the correlation "
              f"that permutation and soft matching fit) is {cross / 2**30:,.0f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 pair of children per figure")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs of children per figure")
    parser.add_argument("--wide-metrics", default=",".join(DEFAULT_METRICS),
                        help="comma-separated metrics scored on the 200,000-unit layer")
    parser.add_argument("--uncapped", action="store_true",
                        help="also score the 200,000-unit layer without max_units (needs hundreds of GiB)")
    parser.add_argument("--skip-run", action="store_true", help="measure (b) only")
    parser.add_argument("--skip-wide", action="store_true", help="measure (a) only")
    parser.add_argument("--metric-workers", type=int, default=None,
                        help="ConvergenceCallback(metric_workers=...) in (a) (default: the callback's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    metrics = [name for name in arguments.wide_metrics.split(",") if name]

    if arguments.child:
        if arguments.child.startswith("run-"):
            result = child_run(arguments.child == "run-with", arguments.metric_workers)
        else:
            result = child_wide(arguments.child, metrics)
        print(json.dumps(result, default=float))
        return

    print_machine()
    pairs = 1 if arguments.quick else arguments.pairs
    if not arguments.skip_run:
        measure_run(pairs, arguments.metric_workers)
    if not arguments.skip_wide:
        measure_wide(pairs, metrics, arguments.uncapped)


if __name__ == "__main__":
    main()

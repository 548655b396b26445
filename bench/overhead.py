"""Measure what ConvergenceCallback costs a training run, as ratios measured side by side.

    python bench/overhead.py              # (a) probe step / training step, (b) 2-epoch run with / without
    python bench/overhead.py --quick      # fewer repeats and a 2 × 50-step run for (b)
    python bench/overhead.py --mnist-job  # also the default MNIST job with / without (several minutes)
    python bench/overhead.py --setup cifar10  # (a) and (b) with configs/cifar10.yaml's ResNet-18, batch 128

(a) One probe step (1,000 MNIST probe images, 4 resnet10t seeds, default
layers, the five default metrics, 5 folds) divided by one training step of
the same 4 seeds, batch 64. With ``--setup cifar10``: 4 resnet18 seeds
(3 input channels) on synthetic 32 × 32 images, batch 128, the network
and batch of configs/cifar10.yaml. Both run in one Trainer: after every
``--train-between`` training steps the callback's ``_probe`` runs once, so
probe and training steps interleave. The ratio per probe is the probe time
over the median of the training steps just before it; the figure is the
median over probes. ``callback.timings`` splits the probe time into forward
passes and metric time.

(b) Wall time of ``trainer.fit`` for 2 epochs of 400 steps on synthetic
32 × 32 images with ``ConvergenceCallback()`` at its default schedule,
divided by the same run without it. Runs alternate (without, with, without,
with, ...) and the figure is the median of the per-pair ratios. Before the
runs, the script prints an estimate from (a): 1 + probe steps × the (a)
ratio / training steps.

(c) With ``--mnist-job``: the default job (configs/mnist.yaml, shift probe
sets included) with and without ConvergenceCallback, as fresh subprocesses
of train/multiseed.py with a CSVLogger in place of TensorBoard and W&B.

(d) With ``--per-metric``, and in place of (a) to (c): the time of
``score_pairs`` for each default metric on the pre-logits layer (512
units) of 4 untrained seeds on the probe set, each metric's share of
their sum, and the time of all five in one call with one metric thread
against the callback's default ``metric_workers``.

Only CPU runs were measured. Each figure is printed with the load average
beside it, because other processes on a small machine change absolute times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SyntheticDataModule, add_torch_threads_argument, load_average, median, start_run  # noqa: E402

from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule  # noqa: E402
from convergence_monitor.schedule import ProbeSchedule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2, 3]
# Two training set-ups: the default MNIST job's small network, and configs/cifar10.yaml's ResNet-18.
SETUPS = {
    "mnist": {"arch": "resnet10t", "in_chans": 1, "batch_size": 64},
    "cifar10": {"arch": "resnet18", "in_chans": 3, "batch_size": 128},
}


def make_module(setup: str) -> MultiSeedModule:
    config = SETUPS[setup]
    return MultiSeedModule(arch=config["arch"], seeds=SEEDS, in_chans=config["in_chans"], num_classes=10)


def make_synthetic(setup: str, steps_per_epoch: int) -> SyntheticDataModule:
    config = SETUPS[setup]
    return SyntheticDataModule(steps_per_epoch=steps_per_epoch, size=32, channels=config["in_chans"],
                               num_seeds=len(SEEDS), batch_size=config["batch_size"])


def make_trainer(root: str, callbacks: list, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=root,
        callbacks=callbacks, **kwargs,
    )


class InterleavedProbes(pl.Callback):
    """Time every training step, and run the convergence callback's probe after every ``every`` steps.

    The convergence callback is not registered with the Trainer, so its own
    schedule never fires. This callback calls its ``setup`` and ``_probe``.
    """

    def __init__(self, convergence: ConvergenceCallback, every: int, warmup: int):
        self.convergence = convergence
        self.every = every
        self.warmup = warmup
        self.train_seconds: list[float] = []
        self.records: list[dict] = []
        self._started = 0.0

    def setup(self, trainer, pl_module, stage):
        self.convergence.setup(trainer, pl_module, stage)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_seconds.append(time.perf_counter() - self._started)
        step = len(self.train_seconds)
        if step < self.warmup or step % self.every:
            return

        timings = dict(self.convergence.timings)
        started = time.perf_counter()
        self.convergence._probe(trainer, pl_module, final=False)
        probe_seconds = time.perf_counter() - started

        # Compare with the training steps since the previous probe, never with the first (warm-up) steps.
        recent = self.train_seconds[-self.every:]
        self.records.append({
            "probe_s": probe_seconds,
            "train_s": median(recent),
            "forward_s": self.convergence.timings["forward_s"] - timings["forward_s"],
            "metrics_s": self.convergence.timings["metrics_s"] - timings["metrics_s"],
            "load": load_average(),
        })


def probe_versus_train(setup: str, probes: int, every: int) -> float:
    config = SETUPS[setup]
    source = "MNIST" if setup == "mnist" else "synthetic 32 x 32 RGB"
    print(f"\n(a) one probe step / one training step (4 seeds of {config['arch']}, {source}, "
          f"batch {config['batch_size']}, probe every {every} training steps, {probes} probes)")
    convergence = ConvergenceCallback()
    interleaved = InterleavedProbes(convergence, every=every, warmup=every)
    module = make_module(setup)
    if setup == "mnist":
        data = MNISTDataModule(num_seeds=len(SEEDS), batch_size=config["batch_size"])
    else:
        data = make_synthetic(setup, steps_per_epoch=every * (probes + 1))
    with tempfile.TemporaryDirectory() as root:
        trainer = make_trainer(root, [interleaved], max_steps=every * probes, max_epochs=-1)
        trainer.fit(module, datamodule=data)

    print(f"    probe set: {len(convergence.probe_sets[0])} images, {len(convergence.layers)} layers, "
          f"metrics {', '.join(convergence.metrics)}, {convergence.folds} folds, "
          f"{convergence.metric_workers} metric worker threads")
    ratios = []
    for index, record in enumerate(interleaved.records, start=1):
        ratio = record["probe_s"] / record["train_s"]
        ratios.append(ratio)
        print(f"    probe {index}: probe {record['probe_s']:.2f} s (forward {record['forward_s']:.2f} s, "
              f"metrics {record['metrics_s']:.2f} s), training step {record['train_s']:.3f} s, "
              f"ratio {ratio:.1f}, load {record['load']}")
    forward = median([r["forward_s"] for r in interleaved.records])
    metrics = median([r["metrics_s"] for r in interleaved.records])
    print(f"    median ratio {median(ratios):.1f} (target <= 5); median split: forward {forward:.2f} s "
          f"({forward / (forward + metrics):.0%}), metrics {metrics:.2f} s ({metrics / (forward + metrics):.0%}); "
          f"load {load_average()}")
    return median(ratios)


def timed_fit(setup: str, steps_per_epoch: int, with_callback: bool) -> tuple[float, int]:
    """Return the wall time of a 2-epoch fit on synthetic data and the number of probe steps."""
    module = make_module(setup)
    data = make_synthetic(setup, steps_per_epoch)
    data.setup("fit")
    callbacks = [ConvergenceCallback()] if with_callback else []
    with tempfile.TemporaryDirectory() as root:
        trainer = make_trainer(root, callbacks, max_epochs=2)
        started = time.perf_counter()
        trainer.fit(module, datamodule=data)
        seconds = time.perf_counter() - started
    probes = callbacks[0].timings["probe_steps"] if callbacks else 0
    return seconds, probes


def project_run_ratio(steps_per_epoch: int, probe_ratio: float) -> None:
    # An estimate, not a measurement: probe steps times the probe/training cost ratio from (a), over all steps.
    total = 2 * steps_per_epoch
    probes = len(ProbeSchedule().steps(steps_per_epoch, total))
    print(f"\n(b) estimate from (a): the default schedule probes {probes} times in 2 x {steps_per_epoch} steps, "
          f"so the run ratio is about 1 + {probes} x {probe_ratio:.1f} / {total} = "
          f"{1 + probes * probe_ratio / total:.2f}")


def run_with_versus_without(setup: str, steps_per_epoch: int, pairs: int) -> None:
    config = SETUPS[setup]
    print(f"\n(b) 2-epoch run with ConvergenceCallback() / without (4 seeds of {config['arch']}, synthetic "
          f"32 x 32, batch {config['batch_size']}, {steps_per_epoch} steps per epoch, {pairs} alternating pairs)")
    ratios = []
    for index in range(1, pairs + 1):
        without, _ = timed_fit(setup, steps_per_epoch, with_callback=False)
        with_, probes = timed_fit(setup, steps_per_epoch, with_callback=True)
        ratios.append(with_ / without)
        print(f"    pair {index}: without {without:.1f} s, with {with_:.1f} s ({probes} probe steps), "
              f"ratio {ratios[-1]:.3f}, load {load_average()}")
    print(f"    median ratio {median(ratios):.3f} (target <= 1.10); load {load_average()}")


def mnist_job(with_callback: bool, root: str, torch_threads: int | None) -> float:
    """Run train/multiseed.py in a fresh process and return its wall time."""
    callbacks = ("[{class_path: pytorch_lightning.callbacks.LearningRateMonitor, "
                 "init_args: {logging_interval: step}}]")
    arguments = [
        sys.executable, str(ROOT / "train" / "multiseed.py"),
        "--trainer.logger", "{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {save_dir: " + root + "}}",
        "--trainer.default_root_dir", root,
        "--trainer.enable_checkpointing", "false",
    ]
    if torch_threads is not None:
        # The CLI has no thread option, so the child sets it from the environment OpenMP reads.
        environment = {**os.environ, "OMP_NUM_THREADS": str(torch_threads)}
    else:
        environment = None
    if not with_callback:
        arguments += ["--trainer.callbacks", callbacks]
    started = time.perf_counter()
    subprocess.run(arguments, check=True, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def mnist_with_versus_without(pairs: int, torch_threads: int | None) -> None:
    print(f"\n(c) default MNIST job (configs/mnist.yaml, CSVLogger) with ConvergenceCallback / without, "
          f"{pairs} alternating pairs")
    ratios = []
    for index in range(1, pairs + 1):
        with tempfile.TemporaryDirectory() as root:
            without = mnist_job(False, root, torch_threads)
        with tempfile.TemporaryDirectory() as root:
            with_ = mnist_job(True, root, torch_threads)
        ratios.append(with_ / without)
        print(f"    pair {index}: without {without:.0f} s, with {with_:.0f} s, ratio {ratios[-1]:.2f}, "
              f"load {load_average()}")
    print(f"    median ratio {median(ratios):.2f}; load {load_average()}")


def metric_split(repeats: int) -> None:
    """Time ``score_pairs`` per metric on the widest default layer of 4 untrained seeds, metrics interleaved."""
    from threadpoolctl import threadpool_limits

    from convergence_monitor import alignment
    from convergence_monitor.callback import DEFAULT_METRICS
    from convergence_monitor.capture import capture_features, default_layers

    module = MultiSeedModule(arch="resnet10t", seeds=SEEDS, in_chans=1, num_classes=10)
    data = MNISTDataModule(num_seeds=len(SEEDS))
    images = torch.cat([batch[0] for batch in data.probe_dataloader()])
    layer = "pre_logits"
    features = {}
    for label, model in module.seed_models().items():
        captured, _ = capture_features(model, images, default_layers(model), max_units=ConvergenceCallback().max_units)
        features[label] = captured[layer]
    print(f"\n(d) score_pairs time per metric, each metric in its own call on 1 thread: layer {layer} "
          f"({features['0'].shape[1]} units), {images.shape[0]} probe images, 4 untrained seeds (6 pairs), 5 folds, "
          f"BLAS 1 thread, {repeats} repeats")
    seconds = {name: [] for name in DEFAULT_METRICS}
    warnings.filterwarnings("ignore", category=alignment.DeadUnitWarning)
    with threadpool_limits(1):
        for _ in range(repeats):
            for name in DEFAULT_METRICS:
                started = time.perf_counter()
                alignment.score_pairs(features, [name], folds=5, seed=0)
                seconds[name].append(time.perf_counter() - started)
    total = sum(median(values) for values in seconds.values())
    for name, values in seconds.items():
        print(f"    {name}: {median(values):.2f} s ({median(values) / total:.0%})")
    print(f"    sum {total:.2f} s; load {load_average()}")

    # The callback scores folds on several threads; compare with one thread, alternating.
    workers = ConvergenceCallback().metric_workers
    together = {1: [], workers: []}
    with threadpool_limits(1):
        for _ in range(repeats):
            for count in together:
                started = time.perf_counter()
                alignment.score_pairs(features, list(DEFAULT_METRICS), folds=5, seed=0, workers=count)
                together[count].append(time.perf_counter() - started)
    # One call shares the per-seed fold statistics and one Hungarian solve, so it costs less than the sum.
    print(f"    all five metrics in one call (sharing fold statistics and the assignment): "
          f"{median(together[1]):.2f} s on 1 thread, {median(together[workers]):.2f} s on {workers} "
          f"(metric_workers), speed-up {median(together[1]) / median(together[workers]):.2f}; load {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 probes for (a), 2 × 50 steps and 1 pair for (b)")
    parser.add_argument("--probes", type=int, default=7, help="interleaved probe steps in (a)")
    parser.add_argument("--train-between", type=int, default=5, help="training steps between probes in (a)")
    parser.add_argument("--pairs", type=int, default=3, help="with/without pairs in (b)")
    parser.add_argument("--skip-run", action="store_true", help="measure (a) and print the estimate for (b) without running (b)")
    parser.add_argument("--per-metric", action="store_true",
                        help="time each metric on one layer (d) instead of (a) and (b)")
    parser.add_argument("--mnist-job", action="store_true", help="also time the default MNIST job (c)")
    parser.add_argument("--mnist-pairs", type=int, default=1, help="with/without pairs in (c)")
    parser.add_argument("--setup", choices=sorted(SETUPS), default="mnist",
                        help="network and batch for (a) and (b): the default MNIST job's or configs/cifar10.yaml's")
    add_torch_threads_argument(
        parser, "torch intra-op threads for training and probe forward passes (default: torch's own)")
    arguments = parser.parse_args()
    start_run(arguments.torch_threads)

    if arguments.per_metric:
        metric_split(repeats=2 if arguments.quick else 3)
        return
    probes, steps_per_epoch, pairs = (3, 50, 1) if arguments.quick else (arguments.probes, 400, arguments.pairs)
    probe_ratio = probe_versus_train(arguments.setup, probes=probes, every=arguments.train_between)
    project_run_ratio(steps_per_epoch, probe_ratio)
    if not arguments.skip_run:
        run_with_versus_without(arguments.setup, steps_per_epoch=steps_per_epoch, pairs=pairs)
    if arguments.mnist_job:
        mnist_with_versus_without(arguments.mnist_pairs, arguments.torch_threads)


if __name__ == "__main__":
    main()

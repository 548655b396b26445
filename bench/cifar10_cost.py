"""Estimate the cost of configs/cifar10.yaml from one measured training step and one metric round.

    python bench/cifar10_cost.py [--steps 3]

Uses synthetic 32×32 RGB images (no CIFAR-10 files needed) and the
config's architecture, seed count, batch size, probe size and metrics. It
times (a) optimizer steps of all seeds on one batch, (b) the probe forward
pass of every seed, and (c) the metric round of one seed pair at one layer
of each distinct width among the default layers. It then scales (c) by the
layer count per width and the pair count. The total is an estimate: the
metric cost on trained features differs from that on random features,
and the number is only as good as this machine's load while measuring.
The config's shift probe sets are counted too: each costs the probe
forward pass and metric round scaled to its size and metrics, at every
probe step (``shift_schedule: every``) or once (``final``). The estimate
leaves out data loading and augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from convergence_monitor import ConvergenceCallback, MultiSeedModule, alignment
from convergence_monitor.capture import capture_features, resolve_layers
from convergence_monitor.shifts.probe_sets import DEFAULT_SEVERITIES

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cifar10.yaml"
TRAIN_IMAGES = 50_000


def shift_set_count(spec) -> int:
    """Return how many shift probe sets a corruption spec builds: families × severities + natural shifts."""
    if not spec:
        return 0
    if spec.get("families") is None or spec.get("natural") is None:
        raise SystemExit("the estimate needs explicit shift_probes families and natural lists in the config")
    return len(spec["families"]) * len(spec.get("severities", DEFAULT_SEVERITIES)) + len(spec["natural"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after one warm-up step)")
    args = parser.parse_args()

    config = yaml.safe_load(CONFIG.read_text())
    model_args = config["model"]
    data_args = config["data"]["init_args"]
    # Building the callback from the config resolves its defaults (layers, sample mode, schedule) as training does.
    callback = ConvergenceCallback(**config["trainer"]["callbacks"][0]["init_args"])
    seeds = model_args["seeds"]
    batch_size = data_args["batch_size"]
    probe_size = data_args["probe_size"]
    epochs = config["trainer"]["max_epochs"]

    module = MultiSeedModule(arch=model_args["arch"], seeds=seeds, num_classes=10, in_chans=3)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))
    networks = list(module.seed_models().values())

    def train_step() -> None:
        loss = sum(torch.nn.functional.cross_entropy(net(images), labels) for net in networks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step()
    started = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    step_s = (time.perf_counter() - started) / args.steps

    layers = resolve_layers(networks[0], callback.layer_patterns)
    probe = torch.randn(probe_size, 3, 32, 32)
    started = time.perf_counter()
    features = [capture_features(net, probe, layers, batch_size=callback.batch_size, sample_mode=callback.sample_mode,
                                 max_units=callback.max_units)[0]
                for net in networks]
    forward_s = time.perf_counter() - started

    widths = Counter(features[0][layer].shape[1] for layer in layers)
    first_layer_of_width = {}
    for layer in layers:
        first_layer_of_width.setdefault(features[0][layer].shape[1], layer)
    pairs = len(seeds) * (len(seeds) - 1) // 2

    def time_metric_round(metrics, samples: int) -> tuple[dict[int, float], float]:
        # One pair per distinct width, scaled by the layer count per width and the pair count.
        by_width = {}
        for width, layer in sorted(first_layer_of_width.items()):
            started = time.perf_counter()
            alignment.score_pairs({"a": features[0][layer][:samples], "b": features[1][layer][:samples]}, metrics,
                                  folds=callback.folds)
            by_width[width] = time.perf_counter() - started
        return by_width, pairs * sum(count * by_width[width] for width, count in widths.items())

    pair_round_s, metric_round_s = time_metric_round(callback.metrics, probe_size)

    # Shift probe sets: the forward pass scales with their image count, the metric round is timed on their size.
    shift_sets = shift_set_count(callback.shift_source)
    shift_size = min(callback.shift_probe_size or probe_size, probe_size)
    shift_forward_s = shift_metric_s = 0.0
    if shift_sets:
        shift_forward_s = shift_sets * forward_s * shift_size / probe_size
        if list(callback.shift_metrics) == list(callback.metrics) and shift_size == probe_size:
            shift_metric_s = shift_sets * metric_round_s
        else:
            shift_metric_s = shift_sets * time_metric_round(callback.shift_metrics, shift_size)[1]

    steps_per_epoch = TRAIN_IMAGES // batch_size
    total_steps = steps_per_epoch * epochs
    probe_steps = len(callback.schedule.steps(steps_per_epoch, total_steps))
    shift_steps = probe_steps if callback.shift_schedule == "every" else 1
    probe_total_s = probe_steps * (forward_s + metric_round_s)
    shift_total_s = shift_steps * (shift_forward_s + shift_metric_s)
    estimate_s = total_steps * step_s + probe_total_s + shift_total_s
    report = {
        "arch": model_args["arch"], "seeds": len(seeds), "batch_size": batch_size, "layers": len(layers),
        "widths": dict(sorted(widths.items())), "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(), "train_step_s": round(step_s, 3),
        "probe_forward_s": round(forward_s, 2), "pair_round_s_by_width": {w: round(s, 2) for w, s in pair_round_s.items()},
        "metric_round_s": round(metric_round_s, 1), "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps, "probe_steps": probe_steps,
        "estimated_total_h": round(estimate_s / 3600, 1),
        "estimated_train_h": round(total_steps * step_s / 3600, 1),
        "shift_probe_sets": shift_sets, "shift_probe_size": shift_size, "shift_steps": shift_steps,
        "shift_forward_s": round(shift_forward_s, 1), "shift_metric_round_s": round(shift_metric_s, 1),
        "estimated_probe_h": round(probe_total_s / 3600, 1),
        "estimated_shift_h": round(shift_total_s / 3600, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

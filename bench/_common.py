"""Helpers shared by the benchmark scripts: thread option, machine description, load average, synthetic data."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convergence_monitor.data import MultiSeedDataModule, NormalizedTensorDataset  # noqa: E402


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    """Return total physical memory in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def load_average() -> str:
    """Return the 1-, 5- and 15-minute load averages as text."""
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def print_machine() -> None:
    """Print the machine, library versions and load average that a figure depends on."""
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {memory_gib():.1f} GiB memory, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"load average at start: {load_average()}")


def add_torch_threads_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add the ``--torch-threads`` option, which ``start_run`` applies."""
    parser.add_argument("--torch-threads", type=int, default=None, help=help_text)


def start_run(torch_threads: int | None) -> None:
    """Set torch's intra-op thread count when given, silence Lightning and print the machine header."""
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    quiet_lightning()
    print_machine()
    print(f"torch threads for this run: {torch.get_num_threads()}")


def median(values) -> float:
    return float(statistics.median(values))


def quiet_lightning() -> None:
    """Silence Lightning's per-run banners and tip warnings so the figures stay readable."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "convergence_monitor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


class SyntheticDataModule(MultiSeedDataModule):
    """Random images in [0, 1] with labels that depend on them, so a network can learn.

    ``steps_per_epoch × batch_size`` training images of ``channels × size × size``
    pixels, plus ``probe_size`` probe images and 256 validation images. The
    label (0 to 3) is the brightest image quadrant, which gives the seeds
    something to learn and align on.
    """

    def __init__(self, steps_per_epoch: int = 400, size: int = 32, channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.steps_per_epoch = steps_per_epoch
        self.size = size
        self.channels = channels

    def _draw(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.rand(count, self.channels, self.size, self.size, generator=generator)
        half = self.size // 2
        quadrants = torch.stack([
            images[:, :, :half, :half].mean(dim=(1, 2, 3)), images[:, :, :half, half:].mean(dim=(1, 2, 3)),
            images[:, :, half:, :half].mean(dim=(1, 2, 3)), images[:, :, half:, half:].mean(dim=(1, 2, 3)),
        ], dim=1)
        labels = quadrants.argmax(dim=1)
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        generator = torch.Generator().manual_seed(self.split_seed)
        train_images, train_labels = self._draw(self.steps_per_epoch * self.batch_size, generator)
        val_images, val_labels = self._draw(256, generator)
        self.probe_set01 = self._draw(self.probe_size, generator)
        self.train_set = NormalizedTensorDataset(train_images, train_labels, self.mean, self.std)
        self.val_set = NormalizedTensorDataset(val_images, val_labels, self.mean, self.std)

"""Out-of-distribution probe sets: corrupted copies of a datamodule's probe images, and natural shifts."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

from convergence_monitor.probes import ProbeSet
from convergence_monitor.shifts.corruptions import SEVERITIES, corrupt, families_for_channels, get_corruption
from convergence_monitor.shifts.natural import MNIST_CANVAS, UCI_DIGITS_COUNT, uci_digits_probe

log = logging.getLogger(__name__)

DEFAULT_SEVERITIES = (2, 4)
"""Severities of the default batteries: one mild and one strong shift per family."""

DEFAULT_DIGIT_BATTERY = ("gaussian_noise", "affine", "fog")
"""Default corruption families for 1-channel digit data, each run at ``DEFAULT_SEVERITIES``.

They change the images in three different ways: ``gaussian_noise`` changes
pixel statistics everywhere, ``affine`` moves the strokes but keeps their
local appearance, and ``fog`` adds low-frequency haze and lowers contrast.
Six probe sets in all.
"""

DEFAULT_NATURAL_BATTERY = ("gaussian_noise", "defocus_blur", "contrast")
"""Default corruption families for 3-channel natural images (noise, blur and digital), at ``DEFAULT_SEVERITIES``."""

NATURAL_SHIFTS = ("uci_digits",)
"""Natural shifts that ``build_shift_probe_sets`` accepts. ``uci_digits`` needs 1-channel 28×28 data."""


def build_shift_probe_sets(
    datamodule,
    *,
    families: Sequence[str] | None = None,
    severities: Sequence[int] = DEFAULT_SEVERITIES,
    natural: Sequence[str] | None = None,
    seed: int = 0,
) -> list[ProbeSet]:
    """Build one probe set per (family, severity) and one per natural shift.

    ``datamodule`` is a ``MultiSeedDataModule``: its in-distribution probe
    images (``probe_images01()``) are corrupted in [0, 1], then normalized
    with ``datamodule.normalize``, and keep their labels. Corrupted sets are
    named ``<family>-<severity>`` (for example ``gaussian_noise-3``), in the
    order families × severities.

    ``families`` defaults to ``DEFAULT_DIGIT_BATTERY`` for 1-channel data and
    ``DEFAULT_NATURAL_BATTERY`` for 3-channel data. ``natural`` defaults to
    ``("uci_digits",)`` for 1-channel 28×28 data and to no natural shift
    otherwise. The ``uci_digits`` set has as many images as the
    in-distribution probe set, up to the 1,797 that exist.

    The same datamodule split, arguments and seed give the same probe sets,
    with the same fingerprints, on every call.
    """
    images01, labels = datamodule.probe_images01()
    channels, height, width = images01.shape[1:]
    is_mnist_frame = channels == 1 and height == width == MNIST_CANVAS
    if families is None:
        families = DEFAULT_DIGIT_BATTERY if channels == 1 else DEFAULT_NATURAL_BATTERY
    if natural is None:
        natural = ("uci_digits",) if is_mnist_frame else ()
    _check_battery(families, severities, natural, channels)

    probe_sets = []
    for family in families:
        for severity in severities:
            corrupted = corrupt(images01, family, severity, seed=seed)
            probe_sets.append(probe_set_from_images01(f"{family}-{severity}", corrupted, labels, datamodule.normalize))

    for name in natural:
        if not is_mnist_frame:
            raise ValueError(
                f"natural shift {name!r} places digits in the 28×28 MNIST frame, so it needs 1-channel 28×28 "
                f"probe images, got shape {tuple(images01.shape[1:])}; pass natural=() for this datamodule"
            )
        size = min(len(labels), UCI_DIGITS_COUNT)
        uci_images01, uci_labels = uci_digits_probe(size, seed=seed)
        probe_sets.append(probe_set_from_images01(name, uci_images01, uci_labels, datamodule.normalize))

    log.info("built %d shift probe sets: %s", len(probe_sets), ", ".join(p.name for p in probe_sets))
    return probe_sets


def probe_set_from_images01(
    name: str,
    images01: torch.Tensor,
    labels: torch.Tensor | None,
    normalize: Callable[[torch.Tensor], torch.Tensor],
) -> ProbeSet:
    """Normalize images in [0, 1] with ``normalize`` and wrap them, with their labels, in a ``ProbeSet``."""
    return ProbeSet(name, normalize(images01.float()).float(), labels)


def _check_battery(families: Sequence[str], severities: Sequence[int], natural: Sequence[str], channels: int) -> None:
    if isinstance(families, str) or isinstance(natural, str):
        raise TypeError("families and natural must be sequences of names, not a single string")
    for family in families:
        corruption = get_corruption(family)
        if not corruption.applies_to(channels):
            raise ValueError(
                f"corruption {family!r} applies to {corruption.domain} images, but the datamodule's probe images "
                f"have {channels} channel(s); families for these images: {', '.join(families_for_channels(channels))}"
            )
    for severity in severities:
        if severity not in SEVERITIES:
            raise ValueError(f"severities must be integers from 1 to 5, got {severity!r}")
    for name in natural:
        if name not in NATURAL_SHIFTS:
            raise ValueError(f"unknown natural shift {name!r}; known natural shifts: {', '.join(NATURAL_SHIFTS)}")
    names = [f"{f}-{s}" for f in families for s in severities] + list(natural)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate shift probe set names {duplicates}: list each family and severity once")

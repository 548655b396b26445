"""convergence-monitor: cross-seed representational alignment, measured while networks train."""

from .callback import ConvergenceCallback  # noqa: F401
from .data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule, MultiSeedDataModule
from .distributed import SeedPerRankStrategy
from .loggers import WandbLogger
from .module import MultiSeedModule
from .probes import ProbeSet
from .schedule import ProbeSchedule

__all__ = [
    "CIFAR10DataModule",
    "ConvergenceCallback",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "MultiSeedDataModule",
    "MultiSeedModule",
    "ProbeSchedule",
    "ProbeSet",
    "SeedPerRankStrategy",
    "WandbLogger",
]

__version__ = "0.1.0"

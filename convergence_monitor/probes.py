"""Probe sets: fixed, fingerprinted image sets that every seed sees at every probe step."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ID_PROBE = "id"
"""Name of the in-distribution probe set in logger keys and in the table."""


@dataclass(frozen=True)
class ProbeSet:
    """A named, fixed set of probe images, ready to feed to every seed.

    ``images`` is an (n, C, H, W) float32 tensor already normalized the way the
    models expect it; ``labels`` is an (n,) int64 tensor or None. The
    fingerprint is a SHA-256 digest of the name, shapes and bytes, so a probe
    set that changed between runs (or between a checkpoint and its resume) is
    detected.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"probe set name must be non-empty and contain no '/', got {self.name!r}")
        if self.images.ndim < 2:
            raise ValueError(
                f"probe set {self.name!r}: expected images of shape (n, ...), got shape {tuple(self.images.shape)}"
            )
        if self.images.shape[0] == 0:
            raise ValueError(f"probe set {self.name!r} is empty: it needs at least one image")
        if not self.images.is_floating_point():
            raise TypeError(
                f"probe set {self.name!r}: expected float images normalized the way the models expect, "
                f"got dtype {self.images.dtype}; convert and normalize them first"
            )
        finite = torch.isfinite(self.images.reshape(self.images.shape[0], -1)).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()
            raise ValueError(
                f"probe set {self.name!r}: {bad.numel()} images contain NaN or inf values "
                f"(first index {int(bad[0])}); drop or repair those images"
            )
        if self.labels is not None and self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"probe set {self.name!r}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        object.__setattr__(self, "images", self.images.detach().cpu().contiguous())
        if self.labels is not None:
            object.__setattr__(self, "labels", self.labels.detach().cpu().long().contiguous())
        object.__setattr__(self, "fingerprint", fingerprint_tensors(self.name, self.images, self.labels))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def fingerprint_tensors(name: str, images: torch.Tensor, labels: torch.Tensor | None) -> str:
    """Return a hex SHA-256 digest of a probe set's name, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    digest.update(name.encode())
    for tensor in (images, labels):
        if tensor is None:
            digest.update(b"none")
            continue
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(array.shape)}{array.dtype}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def probe_set_from_loader(name: str, loader: DataLoader, max_samples: int | None = None) -> ProbeSet:
    """Collect (image, label) batches from a loader into a probe set.

    The loader must be deterministic (no shuffling, no random augmentation),
    because the probe set must be identical at every step.
    """
    images, labels = [], []
    count = 0
    for batch in loader:
        x, y = _split_batch(batch)
        images.append(x)
        if y is not None:
            labels.append(y)
        count += x.shape[0]
        if max_samples is not None and count >= max_samples:
            break
    if not images:
        raise ValueError(f"probe set {name!r}: the probe dataloader yielded no batches")
    stacked = torch.cat(images)[:max_samples]
    stacked_labels = torch.cat(labels)[:max_samples] if labels else None
    return ProbeSet(name, stacked.float(), stacked_labels)


def probe_set_from_dataset(
    name: str, dataset: Dataset, indices: np.ndarray | None = None, batch_size: int = 256
) -> ProbeSet:
    """Build a probe set from a dataset, optionally restricted to fixed indices."""
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, [int(i) for i in indices])
    if len(dataset) == 0:
        raise ValueError(f"probe set {name!r}: the dataset is empty")
    return probe_set_from_loader(name, DataLoader(dataset, batch_size=batch_size, shuffle=False))


def probe_set_from_source(
    name: str,
    source: ProbeSet | torch.Tensor | Dataset | str | Path,
    transform: Callable | None = None,
) -> ProbeSet:
    """Build a probe set from a tensor, a Dataset or an image folder path.

    A tensor is taken as already-normalized images without labels. An image
    folder is read with torchvision's ``ImageFolder`` (class sub-folders give
    the labels), applying ``transform`` (for example the datamodule's
    evaluation transform) to each image.
    """
    if isinstance(source, ProbeSet):
        return source if source.name == name else ProbeSet(name, source.images, source.labels)
    if isinstance(source, torch.Tensor):
        return ProbeSet(name, source.float())
    if isinstance(source, (str, Path)):
        from torchvision.datasets import ImageFolder

        path = Path(source)
        if not path.is_dir():
            raise FileNotFoundError(f"probe set {name!r}: image folder {str(path)!r} not found")
        return probe_set_from_dataset(name, ImageFolder(str(path), transform=transform))
    if isinstance(source, Dataset):
        return probe_set_from_dataset(name, source)
    raise TypeError(
        f"probe set {name!r}: expected a ProbeSet, tensor, Dataset or folder path, got {type(source).__name__}"
    )


def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], labels
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"], batch.get("label")
    raise TypeError(
        "probe batches must be a tensor, an (images, labels) pair or a dict with 'image' and 'label', "
        f"got {type(batch).__name__}"
    )

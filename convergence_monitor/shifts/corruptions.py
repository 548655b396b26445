"""Graded image corruptions at severities 1-5, in the style of MNIST-C and ImageNet-C / CIFAR-10-C.

Every family maps float images in [0, 1] of shape (n, C, H, W) to corrupted
images of the same shape and dtype, clipped to [0, 1]. Each family has a
severity table of five parameter values, ordered so that a higher severity
moves the images further from the clean ones. The families follow

- Mu and Gilmer (2019), "MNIST-C: A Robustness Benchmark for Computer
  Vision", for digit data (1 channel), and
- Hendrycks and Dietterich (2019), "Benchmarking Neural Network Robustness to
  Common Corruptions and Perturbations", for natural images (3 channels),

but they are our own implementations with torch and torchvision's
``transforms.v2.functional``, and the parameter tables are retuned for 28×28
and 32×32 images. Published MNIST-C / CIFAR-10-C numbers are therefore not
directly comparable with results on these corruptions.

Random families draw from a ``torch.Generator`` seeded from
(seed, family, severity), never from the global RNG, so ``corrupt`` returns
bitwise-identical output for the same inputs and seed on the same torch
build. The noise of image i depends on the whole batch (draws are made for
the batch at once), so corrupt a fixed probe set as one batch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from convergence_monitor.shifts import _draw

Domain = Literal["digits", "natural", "both"]
SEVERITIES = (1, 2, 3, 4, 5)

CorruptionFunction = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """A corruption family: its name, the data it applies to and its severity table.

    ``domain`` is "digits" (1-channel images), "natural" (3-channel images)
    or "both". ``function(images, parameter, generator)`` receives float32
    images in [0, 1] and the table entry for the requested severity, and may
    return values outside [0, 1]: ``corrupt`` clips them.
    """

    name: str
    domain: Domain
    function: CorruptionFunction
    severity_table: tuple[Any, Any, Any, Any, Any]
    parameter: str
    """Meaning and units of the severity table entries."""

    def applies_to(self, channels: int) -> bool:
        """Return whether this family accepts images with ``channels`` channels. Counts other than 1 and 3 raise ValueError."""
        return self.domain in ("both", _domain_of(channels))


# Noise ---------------------------------------------------------------------


def _gaussian_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    return images + sigma * torch.randn(images.shape, generator=generator)


def _shot_noise(images: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    # Poisson photon counts at `photons` counts per unit intensity, read back as intensity.
    return torch.poisson(images * photons, generator=generator) / photons


def _impulse_noise(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    # Salt-and-pepper per value: a fraction `amount` of values becomes 0 or 1 with equal odds.
    hit = torch.rand(images.shape, generator=generator) < amount
    salt = torch.rand(images.shape, generator=generator) < 0.5
    return torch.where(hit, salt.to(images.dtype), images)


# Blur ----------------------------------------------------------------------


def _gaussian_blur(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return F.gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def _glass_blur(images: torch.Tensor, parameter: tuple[float, int, float], generator: torch.Generator) -> torch.Tensor:
    # Blur, replace a random fraction `moved` of the pixels with a random pixel at most
    # `max_shift` pixels away in each axis, then blur again. MNIST-C swaps pixel pairs
    # in a loop instead. A gather is cheaper, but it may copy a pixel twice or drop it.
    sigma, max_shift, moved = parameter
    blurred = _gaussian_blur(images, sigma, generator)
    n, channels, height, width = images.shape
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2, height, width), generator=generator)
    shift = shift * (torch.rand((n, 1, height, width), generator=generator) < moved)
    rows = (torch.arange(height).view(1, height, 1) + shift[:, 0]).clamp(0, height - 1)
    cols = (torch.arange(width).view(1, 1, width) + shift[:, 1]).clamp(0, width - 1)
    flat_index = (rows * width + cols).view(n, 1, height * width).expand(-1, channels, -1)
    shuffled = blurred.reshape(n, channels, height * width).gather(2, flat_index).view_as(images)
    return _gaussian_blur(shuffled, sigma, generator)


def _defocus_blur(images: torch.Tensor, radius: float, generator: torch.Generator) -> torch.Tensor:
    return _draw.filter_per_image(images, _draw.disk_kernel(radius))


def _motion_blur(images: torch.Tensor, length: float, generator: torch.Generator) -> torch.Tensor:
    # One straight camera shake per image, at an angle drawn from [-45, 45) degrees.
    angles = _draw.uniform((images.shape[0],), -45.0, 45.0, generator)
    return _draw.filter_per_image(images, _draw.line_kernels(length, angles))


# Geometry ------------------------------------------------------------------


def _affine(images: torch.Tensor, parameter: tuple[float, ...], generator: torch.Generator) -> torch.Tensor:
    # Each image gets the severity's magnitudes with its own random directions:
    # rotation and shear of either sign, zoom in or out, and a diagonal translation.
    angle, shear, zoom, shift = parameter
    n = images.shape[0]
    signs = [_draw.random_signs(n, generator) for _ in range(5)]
    out = torch.empty_like(images)
    for i in range(n):
        scale = zoom if signs[2][i] > 0 else 1.0 / zoom
        out[i] = F.affine(
            images[i],
            angle=float(angle * signs[0][i]),
            translate=[float(shift * signs[3][i]), float(shift * signs[4][i])],
            scale=scale,
            shear=[float(shear * signs[1][i]), 0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=0.0,
        )
    return out


# Weather and light -----------------------------------------------------------


def _brightness(images: torch.Tensor, delta: float, generator: torch.Generator) -> torch.Tensor:
    # Additive, like ImageNet-C's shift of the HSV value channel, so a black
    # MNIST background brightens too (a multiplicative factor would leave it at 0).
    return images + delta


def _fog(images: torch.Tensor, parameter: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    # Add a smooth haze map of height `strength`, then rescale so each image's
    # brightest clean value keeps its place relative to the haze (as ImageNet-C does).
    strength, decay = parameter
    n, _, height, width = images.shape
    haze = _draw.fractal_noise(n, height, width, decay, generator)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images + strength * haze) * peak / (peak + strength)


def _snow(images: torch.Tensor, parameter: tuple[float, float, float], generator: torch.Generator) -> torch.Tensor:
    # Whiten the scene towards a washed-out copy, then add falling flakes:
    # random points smeared into streaks at a steep angle.
    density, streak_length, whitening = parameter
    n, _, height, width = images.shape
    washed = torch.maximum(images, F.rgb_to_grayscale(images, num_output_channels=3) * 1.5 + 0.5)
    scene = (1.0 - whitening) * images + whitening * washed
    flakes = (torch.rand((n, 1, height, width), generator=generator) < density).float()
    angles = _draw.uniform((n,), -135.0, -45.0, generator)
    streaks = _draw.filter_per_image(flakes, _draw.line_kernels(streak_length, angles, normalize=False))
    return scene + streaks.clamp(0.0, 1.0)


# Digital -------------------------------------------------------------------


def _contrast(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    return F.adjust_contrast(images, factor)


def _saturate(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    return F.adjust_saturation(images, factor)


def _pixelate(images: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    height, width = images.shape[-2:]
    small = [max(1, round(height * fraction)), max(1, round(width * fraction))]
    coarse = F.resize(images, small, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.resize(coarse, [height, width], interpolation=InterpolationMode.NEAREST_EXACT)


def _jpeg_compression(images: torch.Tensor, quality: int, generator: torch.Generator) -> torch.Tensor:
    as_bytes = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return F.jpeg(as_bytes, quality).to(images.dtype) / 255.0


# Digit overlays --------------------------------------------------------------


def _stripes(images: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    # Invert a band at the left and at the right edge, each `fraction` of the
    # width wide. MNIST-C's stripe corruption is this at about 1/4 of the width.
    width = images.shape[-1]
    band = max(1, round(width * fraction))
    out = images.clone()
    out[..., :band] = 1.0 - out[..., :band]
    out[..., width - band :] = 1.0 - out[..., width - band :]
    return out


def _line_endpoints(n: int, count: int, height: int, width: int, generator: torch.Generator):
    # Roughly horizontal lines across the canvas: left end in the first 5 columns,
    # right end in the last 5, rows anywhere with the right end within 5 rows of the left.
    left_col = _draw.uniform((n, count), 1.0, 5.0, generator)
    right_col = _draw.uniform((n, count), width - 5.0, width - 2.0, generator)
    left_row = _draw.uniform((n, count), 2.0, height - 3.0, generator)
    right_row = (left_row + _draw.uniform((n, count), -5.0, 5.0, generator)).clamp(0.0, height - 1.0)
    return torch.stack([left_row, left_col], -1), torch.stack([right_row, right_col], -1)


def _dotted_line(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = images.shape
    starts, ends = _line_endpoints(n, count, height, width, generator)
    lines = _draw.rasterize_segments(starts, ends, height, width, half_width=1.2, dash_length=2.0)
    return torch.maximum(images, lines)


def _zigzag(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    # Each zigzag follows a random line, its vertices alternating 2 pixels to
    # either side of the line about every 2 pixels along it.
    n, _, height, width = images.shape
    starts, ends = _line_endpoints(n, count, height, width, generator)
    num_vertices = width // 2
    t = torch.linspace(0.0, 1.0, num_vertices).view(1, 1, -1, 1)
    along = starts.unsqueeze(2) + t * (ends - starts).unsqueeze(2)
    direction = ends - starts
    normal = torch.stack([direction[..., 1], -direction[..., 0]], -1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    side = torch.tensor([(-1.0) ** k for k in range(num_vertices)]).view(1, 1, -1, 1)
    vertices = along + 2.0 * side * normal.unsqueeze(2)
    segment_starts = vertices[:, :, :-1].reshape(n, -1, 2)
    segment_ends = vertices[:, :, 1:].reshape(n, -1, 2)
    lines = _draw.rasterize_segments(segment_starts, segment_ends, height, width, half_width=1.2)
    return torch.maximum(images, lines)


# Registry ------------------------------------------------------------------

CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in [
        Corruption("gaussian_noise", "both", _gaussian_noise, (0.05, 0.10, 0.15, 0.25, 0.35),
                   "standard deviation of additive noise, in intensity units"),
        Corruption("shot_noise", "both", _shot_noise, (60.0, 25.0, 12.0, 5.0, 3.0),
                   "Poisson counts per unit intensity (fewer counts, more noise)"),
        Corruption("impulse_noise", "both", _impulse_noise, (0.03, 0.06, 0.09, 0.17, 0.27),
                   "fraction of values set to 0 or 1"),
        Corruption("gaussian_blur", "both", _gaussian_blur, (0.5, 0.75, 1.0, 1.5, 2.0),
                   "Gaussian kernel standard deviation, in pixels"),
        Corruption("glass_blur", "both", _glass_blur,
                   ((0.5, 1, 0.5), (0.55, 1, 1.0), (0.6, 2, 1.0), (0.7, 3, 1.0), (0.8, 4, 1.0)),
                   "(blur standard deviation in pixels, maximum displacement in pixels, fraction of pixels moved)"),
        Corruption("motion_blur", "both", _motion_blur, (3.0, 5.0, 7.0, 9.0, 11.0),
                   "blur streak length, in pixels"),
        Corruption("defocus_blur", "natural", _defocus_blur, (1.0, 1.5, 2.0, 2.5, 3.0),
                   "disk radius, in pixels"),
        Corruption("affine", "digits", _affine,
                   ((6.0, 4.0, 0.95, 1.0), (12.0, 8.0, 0.9, 1.5), (18.0, 12.0, 0.85, 2.0),
                    (24.0, 16.0, 0.8, 2.5), (30.0, 20.0, 0.75, 3.0)),
                   "(rotation in degrees, shear in degrees, zoom factor or its inverse, "
                   "translation in pixels along each axis)"),
        Corruption("brightness", "both", _brightness, (0.1, 0.2, 0.3, 0.4, 0.5),
                   "intensity added to every value"),
        Corruption("fog", "both", _fog, ((0.2, 2.0), (0.35, 2.0), (0.5, 1.7), (0.7, 1.5), (1.0, 1.4)),
                   "(haze strength in intensity units, amplitude decay per octave)"),
        Corruption("snow", "natural", _snow,
                   ((0.004, 3.0, 0.1), (0.008, 3.0, 0.2), (0.012, 5.0, 0.3), (0.016, 5.0, 0.4), (0.024, 7.0, 0.5)),
                   "(flake density per pixel, streak length in pixels, whitening weight)"),
        Corruption("contrast", "natural", _contrast, (0.6, 0.45, 0.3, 0.2, 0.1),
                   "contrast factor towards the image's mean grey level (1 leaves the image unchanged)"),
        Corruption("saturate", "natural", _saturate, (2.0, 3.0, 5.0, 8.0, 12.0),
                   "saturation factor (1 leaves the image unchanged)"),
        Corruption("pixelate", "natural", _pixelate, (0.8, 0.65, 0.5, 0.4, 0.3),
                   "side of the coarse image as a fraction of the original side"),
        Corruption("jpeg_compression", "natural", _jpeg_compression, (60, 40, 25, 15, 8),
                   "JPEG quality, 1-100"),
        Corruption("stripes", "digits", _stripes, (0.07, 0.12, 0.17, 0.21, 0.25),
                   "width of each inverted edge band, as a fraction of the image width"),
        Corruption("dotted_line", "digits", _dotted_line, (1, 2, 3, 4, 5),
                   "number of dotted lines drawn across the digit"),
        Corruption("zigzag", "digits", _zigzag, (1, 2, 3, 4, 5),
                   "number of zigzag lines drawn across the digit"),
    ]
}
"""All corruption families by name."""

DIGIT_FAMILIES = tuple(name for name, c in CORRUPTIONS.items() if c.domain in ("digits", "both"))
NATURAL_FAMILIES = tuple(name for name, c in CORRUPTIONS.items() if c.domain in ("natural", "both"))


def corrupt(images01: torch.Tensor, family: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """Apply corruption ``family`` at ``severity`` (1-5) to images in [0, 1].

    ``images01`` is a floating-point tensor of shape (n, C, H, W) with
    C = 1 (digit families) or C = 3 (natural-image families); families of
    domain "both" accept either. The result has the same shape, dtype and
    device, clipped to [0, 1]. The work is done in float32 on the CPU.

    Raises ValueError for an unknown family, a severity outside 1-5, a
    negative seed, a family that does not apply to the channel count, or
    images that are not (n, C, H, W) floats in [0, 1].
    """
    corruption = get_corruption(family)
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
    _check_images01(images01)
    channels = images01.shape[1]
    if not corruption.applies_to(channels):
        raise ValueError(
            f"corruption {family!r} applies to {corruption.domain} images "
            f"({_CHANNELS_OF[corruption.domain]} channel(s)), got images with {channels} channel(s); "
            f"families for these images: {', '.join(families_for_channels(channels))}"
        )

    generator = corruption_generator(seed, family, int(severity))
    parameter = corruption.severity_table[int(severity) - 1]
    corrupted = corruption.function(images01.detach().cpu().float(), parameter, generator)
    return corrupted.clamp(0.0, 1.0).to(device=images01.device, dtype=images01.dtype)


def get_corruption(family: str) -> Corruption:
    """Return the registered corruption family called ``family``; raise ValueError if there is none."""
    if family not in CORRUPTIONS:
        raise ValueError(f"unknown corruption family {family!r}; known families: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[family]


def families_for_channels(channels: int) -> tuple[str, ...]:
    """Return the names of the families that accept images with ``channels`` channels."""
    return DIGIT_FAMILIES if _domain_of(channels) == "digits" else NATURAL_FAMILIES


def corruption_generator(seed: int, family: str, severity: int) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded from (seed, family, severity) only.

    numpy's ``SeedSequence`` mixes the three values, so neighbouring seeds and
    severities get unrelated streams. The family name enters as its CRC-32.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sequence = np.random.SeedSequence([int(seed), zlib.crc32(family.encode()), int(severity)])
    state = int(sequence.generate_state(1, dtype=np.uint64)[0])
    # torch.Generator.manual_seed accepts values up to 2**64 - 1.
    return torch.Generator().manual_seed(state)


_CHANNELS_OF = {"digits": "1", "natural": "3", "both": "1 or 3"}


def _domain_of(channels: int) -> str:
    if channels == 1:
        return "digits"
    if channels == 3:
        return "natural"
    raise ValueError(f"corruptions need 1-channel (digit) or 3-channel (natural) images, got {channels} channels")


def _check_images01(images01: torch.Tensor) -> None:
    if not isinstance(images01, torch.Tensor) or not images01.is_floating_point():
        raise ValueError(f"expected a floating-point torch.Tensor of images in [0, 1], got {_describe(images01)}")
    if images01.ndim != 4 or images01.shape[0] == 0:
        raise ValueError(f"expected images of shape (n, C, H, W) with n >= 1, got shape {tuple(images01.shape)}")
    low, high = float(images01.min()), float(images01.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"expected images in [0, 1] (before normalization), got values in [{low:.4g}, {high:.4g}]"
        )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__

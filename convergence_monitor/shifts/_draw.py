"""Drawing and filtering helpers shared by the corruption families.

Every function takes float images of shape (n, C, H, W) or returns maps of
shape (n, 1, H, W), and draws its random numbers from the ``torch.Generator``
it is given, never from the global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """Draw float32 values uniformly from [low, high)."""
    return low + (high - low) * torch.rand(shape, generator=generator)


def random_signs(n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw n values from {-1.0, +1.0} with equal probability."""
    return torch.randint(0, 2, (n,), generator=generator).float() * 2.0 - 1.0


def segment_distance(
    points: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the distance from each point to a segment and the segment parameter of the nearest point.

    ``points`` is (..., P, 2) and ``start``/``end`` are (..., 1, 2), in pixel
    units. The parameter t lies in [0, 1] and runs from ``start`` to ``end``.
    """
    direction = end - start
    length_sq = (direction**2).sum(-1).clamp_min(1e-12)
    t = (((points - start) * direction).sum(-1) / length_sq).clamp(0.0, 1.0)
    nearest = start + t.unsqueeze(-1) * direction
    return (points - nearest).norm(dim=-1), t


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """Return the (row, column) coordinates of pixel centres, shape (H * W, 2)."""
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1)


def rasterize_segments(
    starts: torch.Tensor,
    ends: torch.Tensor,
    height: int,
    width: int,
    half_width: float,
    dash_length: float | None = None,
) -> torch.Tensor:
    """Draw anti-aliased strokes along segments and return an (n, 1, H, W) map in [0, 1].

    ``starts`` and ``ends`` are (n, S, 2) (row, column) endpoints: image i
    gets its S segments. A pixel's intensity falls linearly from 1 on the
    segment to 0 at ``half_width`` pixels from it, and overlapping strokes
    take the maximum. With ``dash_length``, each segment alternates drawn and
    blank pieces of that many pixels, starting with a drawn piece.
    """
    n, num_segments, _ = starts.shape
    points = pixel_grid(height, width).unsqueeze(0)
    canvas = torch.zeros(n, height * width)
    for s in range(num_segments):
        start, end = starts[:, s : s + 1], ends[:, s : s + 1]
        distance, t = segment_distance(points, start, end)
        stroke = (1.0 - distance / half_width).clamp(0.0, 1.0)
        if dash_length is not None:
            along = t * (end - start).norm(dim=-1)
            stroke = stroke * (torch.floor(along / dash_length) % 2 == 0).float()
        canvas = torch.maximum(canvas, stroke)
    return canvas.view(n, 1, height, width)


def line_kernels(length: float, angles_deg: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Return (n, k, k) anti-aliased line kernels of one length at n angles.

    Used for motion blur (normalized to sum 1) and for snow streaks
    (unnormalized, peak 1). Angles are in degrees, counter-clockwise from the
    positive column axis.
    """
    size = 2 * math.ceil((length - 1) / 2) + 1
    radius = (length - 1) / 2
    theta = torch.deg2rad(angles_deg).view(-1, 1, 1)
    offset = torch.cat([-torch.sin(theta), torch.cos(theta)], dim=-1) * radius
    centre = torch.full((1, 1, 2), float(size // 2))
    points = pixel_grid(size, size).unsqueeze(0)
    distance, _ = segment_distance(points, centre - offset, centre + offset)
    kernels = (1.0 - distance).clamp(0.0, 1.0).view(-1, size, size)
    if normalize:
        kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    return kernels


def disk_kernel(radius: float, supersample: int = 8) -> torch.Tensor:
    """Return a (k, k) defocus kernel: the area of each pixel covered by a disk, normalized to sum 1.

    Coverage is estimated on a ``supersample`` × ``supersample`` grid inside
    each pixel, which anti-aliases the disk's edge.
    """
    half = math.ceil(radius)
    size = 2 * half + 1
    fine = (torch.arange(size * supersample, dtype=torch.float32) + 0.5) / supersample - half - 0.5
    rows, cols = torch.meshgrid(fine, fine, indexing="ij")
    inside = (rows**2 + cols**2 <= radius**2).float()
    coverage = inside.view(size, supersample, size, supersample).mean(dim=(1, 3))
    return coverage / coverage.sum()


def filter_per_image(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own kernel, every channel alike, replicating the border.

    ``images`` is (n, C, H, W); ``kernels`` is (n, k, k) or a single (k, k)
    kernel for all images, with k odd.
    """
    n, channels, height, width = images.shape
    if kernels.ndim == 2:
        kernels = kernels.expand(n, -1, -1)
    size = kernels.shape[-1]
    pad = size // 2
    padded = nnf.pad(images.reshape(1, n * channels, height, width), (pad, pad, pad, pad), mode="replicate")
    weight = kernels.repeat_interleave(channels, dim=0).unsqueeze(1).to(images.dtype)
    filtered = nnf.conv2d(padded, weight, groups=n * channels)
    return filtered.view(n, channels, height, width)


def fractal_noise(n: int, height: int, width: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """Return (n, 1, H, W) smooth random maps in [0, 1], each rescaled to span the full range.

    Octaves of uniform noise on grids of 2, 4, 8, ... cells (up to half the
    image size) are upsampled bilinearly and summed, the amplitude falling by
    ``decay`` per octave, so a smaller ``decay`` gives a patchier map. This
    replaces the diamond-square plasma fractal of ImageNet-C's fog.
    """
    total = torch.zeros(n, 1, height, width)
    cells, amplitude = 2, 1.0
    while cells <= max(height, width) // 2:
        coarse = torch.rand((n, 1, cells, cells), generator=generator)
        total += amplitude * nnf.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
        cells *= 2
        amplitude /= decay
    low = total.amin(dim=(2, 3), keepdim=True)
    high = total.amax(dim=(2, 3), keepdim=True)
    # A constant map (not reachable with two or more octaves of continuous noise) would divide by zero.
    return (total - low) / (high - low).clamp_min(1e-12)

"""Shift magnitude: how far a probe set lies from the in-distribution one.

Two measures, to put on the x-axis when layer-wise alignment is plotted
against shift size: the Fréchet distance between Gaussians fitted to
features of the two sets, and the seeds' mean drop in top-1 accuracy.
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
import scipy.linalg
import torch

from convergence_monitor.probes import ProbeSet

log = logging.getLogger(__name__)

_MAX_RELATIVE_IMAGINARY = 1e-3
"""Largest imaginary part, relative to the largest real entry, that ``sqrtm`` may leave and still count as rounding."""


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Return the Fréchet distance between Gaussians fitted to two feature matrices.

    ``features_a`` is (n_a, d) and ``features_b`` is (n_b, d), one row per
    sample. Means and covariances (unbiased, n - 1) are computed in float64,
    then passed to ``frechet_distance_gaussians``. This is the squared
    2-Wasserstein distance between the fitted Gaussians, the quantity FID
    reports. With fewer samples than feature dimensions the covariances are
    singular and the estimate is biased upwards, so compare distances
    computed from equal sample sizes.
    """
    a = _as_feature_matrix(features_a, "features_a")
    b = _as_feature_matrix(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature matrices must have the same number of columns, got {a.shape[1]} and {b.shape[1]}"
        )
    mean_a, cov_a = a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False))
    mean_b, cov_b = b.mean(axis=0), np.atleast_2d(np.cov(b, rowvar=False))
    return frechet_distance_gaussians(mean_a, cov_a, mean_b, cov_b)


def frechet_distance_gaussians(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Return the Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    d = ||mean_a - mean_b||² + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)),
    computed in float64 with ``scipy.linalg.sqrtm``. Returns NaN with a
    RuntimeWarning when the matrix square root cannot be made real and
    finite (for example with covariances that are not positive
    semi-definite).
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    dims = mean_a.shape[0]
    if mean_b.shape != (dims,) or cov_a.shape != (dims, dims) or cov_b.shape != (dims, dims):
        raise ValueError(
            f"expected means of shape (d,) and covariances of shape (d, d) with one d, got {mean_a.shape}, "
            f"{cov_a.shape}, {mean_b.shape}, {cov_b.shape}"
        )

    sqrt_product = _sqrtm_of_product(cov_a, cov_b)
    if sqrt_product is None:
        return float("nan")

    mean_term = float(np.sum((mean_a - mean_b) ** 2))
    trace_term = float(np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(sqrt_product))
    # The distance is non-negative, but rounding can leave a tiny negative value when the two Gaussians coincide.
    return max(mean_term + trace_term, 0.0)


def _sqrtm_of_product(cov_a: np.ndarray, cov_b: np.ndarray) -> np.ndarray | None:
    """Return the real square root of cov_a @ cov_b, or None (after a warning) if there is none."""
    product = cov_a @ cov_b
    root = scipy.linalg.sqrtm(product)

    # A singular product (fewer samples than dimensions, or constant features) can make sqrtm
    # return inf or NaN. Adding a small multiple of the identity to both covariances regularizes
    # it, at the cost of a bias of about 2 * d * eps in the distance.
    if not np.isfinite(root).all():
        eps = 1e-6 * max(np.trace(cov_a), np.trace(cov_b), 1e-12) / cov_a.shape[0]
        log.warning("sqrtm of the covariance product is not finite; adding %.3g to the covariance diagonals", eps)
        identity = np.eye(cov_a.shape[0])
        root = scipy.linalg.sqrtm((cov_a + eps * identity) @ (cov_b + eps * identity))

    # cov_a @ cov_b is similar to a positive semi-definite matrix, so its eigenvalues are real and
    # non-negative, and so is its principal square root. Eigenvalues that rounding pushes slightly
    # below zero make sqrtm return complex output with small imaginary parts: those are dropped.
    # Large imaginary parts mean a covariance was not positive semi-definite.
    if np.iscomplexobj(root):
        imaginary = float(np.max(np.abs(root.imag)))
        scale = max(float(np.max(np.abs(root.real))), 1e-12)
        if imaginary > _MAX_RELATIVE_IMAGINARY * scale:
            warnings.warn(
                f"Fréchet distance is NaN: sqrtm(cov_a @ cov_b) has imaginary parts up to {imaginary:.3g} "
                f"(real parts up to {scale:.3g}), so a covariance is not positive semi-definite; "
                "check the features for NaN or pass covariances computed from the data",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        root = root.real

    if not np.isfinite(root).all():
        warnings.warn(
            "Fréchet distance is NaN: sqrtm(cov_a @ cov_b) is not finite even after regularization; "
            "check the features for NaN or infinite values",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return root


def _as_feature_matrix(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{name} must be an (n, d) matrix with n >= 2 samples, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


@torch.no_grad()
def top1_accuracy(model: torch.nn.Module, probe_set: ProbeSet, batch_size: int = 256) -> float:
    """Return the model's top-1 accuracy on a labelled probe set, as a fraction.

    The model runs in eval mode on the device of its first parameter (CPU if
    it has none) and is put back in its previous mode afterwards.
    """
    if probe_set.labels is None:
        raise ValueError(f"probe set {probe_set.name!r} has no labels, so accuracy cannot be computed")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(probe_set), batch_size):
            images = probe_set.images[start : start + batch_size].to(device)
            predictions = model(images).argmax(dim=1).cpu()
            correct += int((predictions == probe_set.labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(probe_set)


def accuracy_drop(models: Sequence[torch.nn.Module], clean: ProbeSet, shifted: ProbeSet) -> float:
    """Return the seeds' mean top-1 accuracy on ``clean`` minus their mean accuracy on ``shifted``.

    ``models`` contains one trained model per seed. A positive value means the
    shift costs accuracy. Accuracies are fractions, so the drop lies in [-1, 1].
    """
    if len(models) == 0:
        raise ValueError("accuracy_drop needs at least one model")
    drops = [top1_accuracy(model, clean) - top1_accuracy(model, shifted) for model in models]
    return float(np.mean(drops))

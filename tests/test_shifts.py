"""Tests for convergence_monitor.shifts: corruptions, UCI digits, Fréchet distance and shift probe sets."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch

from convergence_monitor.data import MNISTDataModule
from convergence_monitor.shifts import (
    CORRUPTIONS,
    DEFAULT_DIGIT_BATTERY,
    DEFAULT_SEVERITIES,
    DIGIT_FAMILIES,
    NATURAL_FAMILIES,
    SEVERITIES,
    accuracy_drop,
    build_shift_probe_sets,
    corrupt,
    frechet_distance,
    frechet_distance_gaussians,
    probe_set_from_images01,
    top1_accuracy,
    uci_digits_probe,
)

# Families whose output does not depend on the seed.
DETERMINISTIC_FAMILIES = {
    "gaussian_blur",
    "defocus_blur",
    "brightness",
    "contrast",
    "saturate",
    "pixelate",
    "jpeg_compression",
    "stripes",
}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run torch on one thread: these tensors are small, and on a loaded machine thread hand-offs dominate."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mnist() -> MNISTDataModule:
    datamodule = MNISTDataModule(probe_size=64)
    datamodule.setup("fit")
    return datamodule


@pytest.fixture(scope="module")
def digit_images(mnist) -> torch.Tensor:
    return mnist.probe_images01()[0]


@pytest.fixture(scope="module")
def natural_images() -> torch.Tensor:
    """Random 3×32×32 images with some structure of natural photos: a smooth background and flat-colored patches."""
    generator = torch.Generator().manual_seed(123)
    n, size = 64, 32
    background = torch.nn.functional.interpolate(
        torch.rand(n, 3, 3, 3, generator=generator), size=(size, size), mode="bilinear", align_corners=True
    )
    rows = torch.arange(size).view(1, 1, size, 1)
    cols = torch.arange(size).view(1, 1, 1, size)
    images = background
    for _ in range(6):
        top, left = (torch.randint(0, size - 4, (n, 1, 1, 1), generator=generator) for _ in range(2))
        height, width = (torch.randint(3, size // 2, (n, 1, 1, 1), generator=generator) for _ in range(2))
        patch = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
        images = torch.where(patch, torch.rand(n, 3, 1, 1, generator=generator), images)
    texture = torch.rand(n, 3, size, size, generator=generator)
    return (0.9 * images + 0.1 * texture).clamp(0.0, 1.0)


def _images_for(family: str, digit_images: torch.Tensor, natural_images: torch.Tensor) -> list[torch.Tensor]:
    domain = CORRUPTIONS[family].domain
    return {"digits": [digit_images], "natural": [natural_images], "both": [digit_images, natural_images]}[domain]


# Corruptions -----------------------------------------------------------------


def test_registry_covers_both_domains():
    assert {"gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "affine", "fog", "stripes"} <= set(
        DIGIT_FAMILIES
    )
    assert {"gaussian_noise", "defocus_blur", "fog", "brightness", "contrast", "pixelate"} <= set(NATURAL_FAMILIES)
    assert {"jpeg_compression", "saturate"} <= set(NATURAL_FAMILIES)
    for corruption in CORRUPTIONS.values():
        assert len(corruption.severity_table) == 5, corruption.name
        assert corruption.domain in ("digits", "natural", "both"), corruption.name


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_corruption_shape_dtype_range(family, digit_images, natural_images):
    for images in _images_for(family, digit_images, natural_images):
        for severity in (1, 5):
            out = corrupt(images, family, severity, seed=0)
            assert out.shape == images.shape
            assert out.dtype == images.dtype
            assert float(out.min()) >= 0.0
            assert float(out.max()) <= 1.0


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_corruption_deterministic_per_seed(family, digit_images, natural_images):
    for images in _images_for(family, digit_images, natural_images):
        first = corrupt(images, family, 3, seed=7)
        second = corrupt(images, family, 3, seed=7)
        assert torch.equal(first, second)
        other_seed = corrupt(images, family, 3, seed=8)
        if family in DETERMINISTIC_FAMILIES:
            assert torch.equal(first, other_seed)
        else:
            assert not torch.equal(first, other_seed)


def test_corruption_leaves_global_rng_alone(digit_images):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    corrupt(digit_images, "gaussian_noise", 3, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_corruption_monotone_in_severity(family, digit_images, natural_images):
    for images in _images_for(family, digit_images, natural_images):
        errors = [float(((corrupt(images, family, s, seed=0) - images) ** 2).mean()) for s in SEVERITIES]
        for severity, (lower, higher) in enumerate(zip(errors, errors[1:]), start=1):
            assert lower < higher, f"{family}: MSE {lower:.5f} at severity {severity} >= {higher:.5f} at {severity + 1}"


def test_corrupt_rejects_unknown_family(digit_images):
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(digit_images, "no_such_family", 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True])
def test_corrupt_rejects_bad_severity(severity, digit_images):
    with pytest.raises(ValueError, match="severity"):
        corrupt(digit_images, "gaussian_noise", severity)


def test_corrupt_rejects_wrong_domain(digit_images, natural_images):
    with pytest.raises(ValueError, match="natural"):
        corrupt(digit_images, "saturate", 1)
    with pytest.raises(ValueError, match="digits"):
        corrupt(natural_images, "stripes", 1)


def test_corrupt_rejects_bad_images(digit_images):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(digit_images * 2.0, "gaussian_noise", 1)
    with pytest.raises(ValueError, match="shape"):
        corrupt(digit_images[0], "gaussian_noise", 1)
    with pytest.raises(ValueError, match="floating-point"):
        corrupt((digit_images * 255).to(torch.uint8), "gaussian_noise", 1)
    with pytest.raises(ValueError, match="channel"):
        corrupt(torch.rand(2, 2, 8, 8), "gaussian_noise", 1)
    with pytest.raises(ValueError, match="seed"):
        corrupt(digit_images, "gaussian_noise", 1, seed=-1)


def test_corrupt_keeps_float64(digit_images):
    images = digit_images.double()
    out = corrupt(images, "fog", 2)
    assert out.dtype == torch.float64


# UCI digits --------------------------------------------------------------------


def test_uci_digits_shape_range_labels():
    images, labels = uci_digits_probe()
    assert images.shape == (1797, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert float(images.min()) == 0.0
    assert float(images.max()) <= 1.0
    assert float(images.max()) > 0.9
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_uci_digits_centred_by_mass():
    images, _ = uci_digits_probe()
    positions = torch.arange(28, dtype=torch.float32)
    mass = images.sum(dim=(1, 2, 3))
    centre_row = (images.sum(dim=(1, 3)) * positions).sum(dim=1) / mass
    centre_col = (images.sum(dim=(1, 2)) * positions).sum(dim=1) / mass
    # Whole-pixel placement leaves each digit's centre within half a pixel of (14, 14).
    assert float((centre_row - 14.0).abs().max()) <= 0.5 + 1e-4
    assert float((centre_col - 14.0).abs().max()) <= 0.5 + 1e-4
    assert abs(float(centre_row.mean()) - 14.0) < 0.1
    assert abs(float(centre_col.mean()) - 14.0) < 0.1


def test_uci_digits_subset_seeded():
    images, labels = uci_digits_probe(100, seed=3)
    again, again_labels = uci_digits_probe(100, seed=3)
    other, _ = uci_digits_probe(100, seed=4)
    assert images.shape == (100, 1, 28, 28)
    assert torch.equal(images, again)
    assert torch.equal(labels, again_labels)
    assert not torch.equal(images, other)
    with pytest.raises(ValueError, match="1797"):
        uci_digits_probe(1798)


# Probe data stays out of training ------------------------------------------------


def test_mnist_probe_disjoint_from_train(mnist):
    probe_images, _ = mnist.probe_images01()
    train_images = mnist.train_set.images01

    def row_hashes(images: torch.Tensor) -> set[str]:
        flat = images.reshape(images.shape[0], -1).contiguous().numpy()
        return {hashlib.sha256(row.tobytes()).hexdigest() for row in flat}

    shared = row_hashes(probe_images) & row_hashes(train_images)
    assert not shared, f"{len(shared)} probe images also appear in the training set"


# Fréchet distance ---------------------------------------------------------------


def _features_with_moments(mean: np.ndarray, std: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Return n samples whose sample mean is ``mean`` and sample covariance is exactly diag(std²)."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n, mean.shape[0]))
    raw -= raw.mean(axis=0)
    # Orthonormal, zero-mean columns: QR of centred data keeps the column means at zero.
    orthonormal, _ = np.linalg.qr(raw)
    return mean + np.sqrt(n - 1) * orthonormal * std


def test_frechet_zero_for_identical_sets():
    features = np.random.default_rng(0).standard_normal((200, 8))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_diagonal_closed_form():
    mean_a, std_a = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 0.5, 2.0, 3.0])
    mean_b, std_b = np.array([1.0, 1.0, 0.0, -0.5]), np.array([2.0, 0.5, 1.0, 0.1])
    features_a = _features_with_moments(mean_a, std_a, 300, seed=1)
    features_b = _features_with_moments(mean_b, std_b, 500, seed=2)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-8)
    moments = frechet_distance_gaussians(mean_a, np.diag(std_a**2), mean_b, np.diag(std_b**2))
    assert moments == pytest.approx(expected, rel=1e-10)


def test_frechet_symmetric():
    rng = np.random.default_rng(5)
    features_a = rng.standard_normal((150, 6))
    features_b = rng.standard_normal((120, 6)) @ rng.standard_normal((6, 6)) + 0.3
    forward = frechet_distance(features_a, features_b)
    backward = frechet_distance(features_b, features_a)
    assert forward > 0.0
    assert forward == pytest.approx(backward, rel=1e-8)


def test_frechet_accepts_tensors_and_few_samples():
    rng = np.random.default_rng(9)
    features_a = torch.from_numpy(rng.standard_normal((10, 30)))
    features_b = torch.from_numpy(rng.standard_normal((10, 30)) + 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        distance = frechet_distance(features_a, features_b)
    assert np.isfinite(distance)
    assert distance > 30 * 0.5


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="columns"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))


# Accuracy drop -------------------------------------------------------------------


class _PredictFirstPixel(torch.nn.Module):
    """Predict class 1 where the first input value is positive, class 0 otherwise."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        positive = (images.reshape(images.shape[0], -1)[:, 0] > 0).float()
        return torch.stack([1.0 - positive, positive], dim=1)


def test_accuracy_drop_mean_over_models():
    images = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1)
    labels = torch.tensor([1, 0, 1, 0])
    clean = probe_set_from_images01("clean", images, labels, lambda x: x)
    shifted = probe_set_from_images01("shifted", -images, labels, lambda x: x)
    model = _PredictFirstPixel().train()
    assert top1_accuracy(model, clean) == 1.0
    assert top1_accuracy(model, shifted) == 0.0
    assert model.training
    assert accuracy_drop([model, _PredictFirstPixel()], clean, shifted) == 1.0


# Shift probe sets ---------------------------------------------------------------


def test_build_shift_probe_sets_default_mnist(mnist):
    probe_sets = build_shift_probe_sets(mnist)
    expected_names = [f"{f}-{s}" for f in DEFAULT_DIGIT_BATTERY for s in DEFAULT_SEVERITIES] + ["uci_digits"]
    assert [p.name for p in probe_sets] == expected_names

    _, labels = mnist.probe_images01()
    for probe_set in probe_sets[:-1]:
        assert torch.equal(probe_set.labels, labels)
        assert probe_set.images.shape == (64, 1, 28, 28)
        assert probe_set.images.dtype == torch.float32
    assert len(probe_sets[-1]) == 64


def test_build_shift_probe_sets_normalizes(mnist):
    (probe_set,) = build_shift_probe_sets(mnist, families=["gaussian_noise"], severities=[3], natural=())
    images01, _ = mnist.probe_images01()
    expected = mnist.normalize(corrupt(images01, "gaussian_noise", 3, seed=0))
    assert torch.equal(probe_set.images, expected)


def test_build_shift_probe_sets_stable(mnist):
    first = build_shift_probe_sets(mnist, families=["affine", "zigzag"], severities=[1, 5], seed=2)
    second = build_shift_probe_sets(mnist, families=["affine", "zigzag"], severities=[1, 5], seed=2)
    assert [p.name for p in first] == [p.name for p in second]
    assert [p.fingerprint for p in first] == [p.fingerprint for p in second]
    for a, b in zip(first, second):
        assert torch.equal(a.labels, b.labels)
    other_seed = build_shift_probe_sets(mnist, families=["affine"], severities=[1], natural=(), seed=3)
    assert other_seed[0].fingerprint != first[0].fingerprint


class _RGBProbeData:
    """The two methods of a datamodule that build_shift_probe_sets uses, on 3-channel images."""

    def __init__(self, images01: torch.Tensor):
        self.images01 = images01
        self.labels = torch.arange(images01.shape[0]) % 10

    def probe_images01(self):
        return self.images01, self.labels

    def normalize(self, images01):
        return (images01 - 0.5) / 0.25


def test_build_shift_probe_sets_rgb(natural_images):
    data = _RGBProbeData(natural_images[:8])
    names = [p.name for p in build_shift_probe_sets(data)]
    assert "uci_digits" not in names
    assert len(names) == 6
    with pytest.raises(ValueError, match="digits"):
        build_shift_probe_sets(data, families=["stripes"])
    with pytest.raises(ValueError, match="28×28"):
        build_shift_probe_sets(data, families=["gaussian_noise"], natural=["uci_digits"])


def test_build_shift_probe_sets_rejects_bad_names(mnist):
    with pytest.raises(ValueError, match="unknown corruption family"):
        build_shift_probe_sets(mnist, families=["nope"])
    with pytest.raises(ValueError, match="unknown natural shift"):
        build_shift_probe_sets(mnist, natural=["svhn"])
    with pytest.raises(ValueError, match="severities"):
        build_shift_probe_sets(mnist, severities=[0])
    with pytest.raises(ValueError, match="duplicate"):
        build_shift_probe_sets(mnist, families=["fog", "fog"])

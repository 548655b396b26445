import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from convergence_monitor.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule, PerSeedBatchSampler


def _row_hashes(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.reshape(images.shape[0], -1)}


def test_mnist_split_sizes_and_disjoint_parts():
    data = MNISTDataModule(probe_size=1000, val_size=500)
    data.setup("fit")
    probe_images, probe_labels = data.probe_images01()
    assert probe_images.shape == (1000, 1, 28, 28)
    assert len(data.val_set) == 500
    assert len(data.train_set) == 3500
    probe = _row_hashes(probe_images)
    train = _row_hashes(data.train_set.images01)
    val = _row_hashes(data.val_set.images01)
    assert not probe & train
    assert not probe & val
    assert set(probe_labels.tolist()) == set(range(10))


def test_mnist_probe_loader_is_fixed_and_normalized():
    data = MNISTDataModule(probe_size=64)
    first = torch.cat([x for x, _ in data.probe_dataloader()])
    second = torch.cat([x for x, _ in data.probe_dataloader()])
    assert torch.equal(first, second)
    assert abs(float(first.mean())) < 0.5
    assert float(first.std()) > 0.5


def test_mnist_rejects_split_without_training_images():
    with pytest.raises(ValueError, match="leaves no MNIST training images"):
        MNISTDataModule(probe_size=4000, val_size=1000).setup("fit")


def test_per_seed_sampler_gives_each_seed_its_own_order():
    sampler = PerSeedBatchSampler(num_samples=100, batch_size=10, num_seeds=3, base_seed=0)
    batches = list(sampler)
    assert len(batches) == 10
    assert all(len(b) == 30 for b in batches)
    per_seed = [sum((b[i * 10:(i + 1) * 10] for b in batches), []) for i in range(3)]
    for order in per_seed:
        assert sorted(order) == list(range(100))  # each seed sees the whole set once per epoch
    assert per_seed[0] != per_seed[1]
    sampler.set_epoch(1)
    assert list(sampler)[0] != batches[0]


def test_per_seed_loader_batches_hold_one_chunk_per_seed():
    data = MNISTDataModule(probe_size=100, val_size=100, batch_size=8, num_seeds=2, data_order="per_seed")
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape[0] == 16
    assert not torch.equal(images[:8], images[8:])


def test_shared_loader_is_reproducible():
    data = MNISTDataModule(probe_size=100, val_size=100, batch_size=8)
    data.setup("fit")
    first = next(iter(data.train_dataloader()))[1]
    second = next(iter(data.train_dataloader()))[1]
    assert torch.equal(first, second)


def _write_cifar(root, n_train=40, n_test=30):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_batch = n_train // 5
    for i in range(1, 6):
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n_test).tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return test


def test_cifar10_loader_reads_python_batches(tmp_path, monkeypatch):
    test = _write_cifar(tmp_path)
    # Files written here cannot match torchvision's published checksums; the rest of the loader is real.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    data = CIFAR10DataModule(root=str(tmp_path), probe_size=10, batch_size=4)
    data.setup("fit")
    probe_images, probe_labels = data.probe_images01()
    assert probe_images.shape == (10, 3, 32, 32)
    assert float(probe_images.min()) >= 0
    assert float(probe_images.max()) <= 1
    assert len(data.val_set) == 20
    assert len(data.train_set) == 40
    order = np.random.default_rng(0).permutation(30)[:10]
    expected = torch.as_tensor(test["data"][order].reshape(10, 3, 32, 32)).float() / 255
    torch.testing.assert_close(probe_images, expected)
    assert probe_labels.tolist() == [test["labels"][i] for i in order]
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32)


def test_cifar10_missing_folder_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")


def _write_image_folder(root, classes=("cat", "dog", "fox"), per_class=4):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_loader(tmp_path):
    _write_image_folder(tmp_path)
    data = ImageFolderDataModule(root=str(tmp_path), image_size=16, probe_size=5, batch_size=3)
    data.setup("fit")
    probe_images, probe_labels = data.probe_images01()
    assert probe_images.shape == (5, 3, 16, 16)
    assert data.num_classes == 3
    assert len(data.val_set) == 7
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (3, 3, 16, 16)
    assert set(labels.tolist()) <= {0, 1, 2}


def test_image_folder_missing_split_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="val"):
        ImageFolderDataModule(root=str(tmp_path)).setup("fit")

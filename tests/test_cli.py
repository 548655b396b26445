import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "train" / "multiseed.py"

TINY = """
trainer:
  max_steps: 3
  limit_val_batches: 1
  callbacks:
    - class_path: convergence_monitor.ConvergenceCallback
      init_args:
        layers: [conv1.0, layer2.0.conv2, pre_logits]
        metrics: [procrustes, linear_cka]
        first_epoch_points: 2
        shift_probes:
          families: [gaussian_noise]
          severities: [3]
          natural: [uci_digits]
model:
  seeds: [0, 1]
data:
  class_path: convergence_monitor.MNISTDataModule
  init_args:
    batch_size: 16
    probe_size: 40
    val_size: 40
"""


def _run(tmp_path, *args, script: Path = SCRIPT):
    # Earlier tests leave W&B variables behind (WANDB_SERVICE points at this process's W&B service).
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "none"), WANDB_DIR=str(tmp_path),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
               PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_multiseed_script_runs_end_to_end(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = _run(tmp_path, "--config", str(REPO / "configs" / "mnist.yaml"), "--config", "tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("run directory: ")
    run_dir = Path(last.removeprefix("run directory: "))
    assert run_dir.is_relative_to(tmp_path)

    with (run_dir / "alignment.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(r["step"]) for r in rows} == {0, 1, 3}
    assert {r["probe"] for r in rows} == {"id", "gaussian_noise-3", "uci_digits"}
    assert {r["metric"] for r in rows} == {"procrustes", "linear_cka"}
    assert (run_dir / "probe_stats.csv").exists()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert "logging offline" in result.stderr
    assert "wandb sync" in result.stderr
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_multiseed_script_unknown_metric_fails_at_start(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("[procrustes, linear_cka]", "[procrustes, cca]"))
    result = _run(tmp_path, "--config", str(REPO / "configs" / "mnist.yaml"), "--config", "tiny.yaml")
    assert result.returncode != 0
    assert "unknown metric 'cca'" in result.stderr
    assert "alignment.csv" not in result.stdout


@pytest.mark.slow
def test_multiseed_script_unknown_layer_fails_at_start(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("[conv1.0, layer2.0.conv2, pre_logits]", "[conv9]"))
    result = _run(tmp_path, "--config", str(REPO / "configs" / "mnist.yaml"), "--config", "tiny.yaml")
    assert result.returncode != 0
    assert "layer 'conv9' not found" in result.stderr


CIFAR_RUNNER = """
import sys
from unittest import mock

sys.path.insert(0, {train!r})
import multiseed

# Files written by the test cannot match torchvision's published checksums.
with mock.patch("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True):
    multiseed.main(sys.argv[1:])
"""

CIFAR_TINY = """
trainer:
  max_steps: 2
  limit_val_batches: 1
model:
  arch: resnet10t
  seeds: [0, 1]
  model_kwargs:
    channels: [16, 32, 64, 128]
data:
  class_path: convergence_monitor.CIFAR10DataModule
  init_args:
    root: {root}
    batch_size: 8
    probe_size: 20
    num_workers: 0
"""


@pytest.mark.slow
def test_cifar10_config_runs_on_small_files(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{i}", 16) for i in range(1, 6)), ("test_batch", 40)]:
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, count).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    (tmp_path / "runner.py").write_text(CIFAR_RUNNER.format(train=str(REPO / "train")))
    (tmp_path / "tiny.yaml").write_text(CIFAR_TINY.format(root=tmp_path / "cifar"))

    result = _run(tmp_path, "--config", str(REPO / "configs" / "cifar10.yaml"), "--config", "tiny.yaml",
                  script=tmp_path / "runner.py")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    with (run_dir / "alignment.csv").open(newline="") as handle:
        probes = {row["probe"] for row in csv.DictReader(handle)}
    assert probes == {"id", "gaussian_noise-2", "gaussian_noise-4", "defocus_blur-2", "defocus_blur-4",
                      "contrast-2", "contrast-4"}

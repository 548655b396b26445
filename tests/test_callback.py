import csv
import math
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule, WandbLogger
from convergence_monitor.callback import DEFAULT_METRICS

LAYERS = ["conv1.0", "layer2.0.conv2", "pre_logits"]


def _read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _trainer(tmp_path, callbacks, loggers=None, max_steps=6, **kwargs):
    return pl.Trainer(
        max_steps=max_steps, limit_val_batches=1, logger=loggers if loggers is not None else
        CSVLogger(tmp_path, name="run"), callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", num_sanity_val_steps=0,
        **kwargs,
    )


@pytest.fixture
def small_data():
    return MNISTDataModule(probe_size=60, val_size=60, batch_size=16, num_seeds=2)


class _ScoreRecorder(pl.Callback):
    """Records each submodule's train flag right after every training batch."""

    def __init__(self):
        self.flags = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.flags.append({name: m.training for name, m in pl_module.named_modules()})


def test_callback_writes_rows_and_keys_at_planned_steps(tmp_path, small_data):
    module = MultiSeedModule(seeds=[0, 1])
    callback = ConvergenceCallback(layers=LAYERS, first_epoch_points=4)
    trainer = _trainer(tmp_path, [callback], max_steps=6, limit_train_batches=4)
    trainer.fit(module, datamodule=small_data)

    rows = _read_rows(Path(trainer.log_dir) / "alignment.csv")
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == callback.planned_steps
    assert steps[0] == 0
    assert steps[-1] == 6
    assert {r["metric"] for r in rows} == set(DEFAULT_METRICS)
    assert {r["layer"] for r in rows} == set(LAYERS)
    assert {(r["seed_a"], r["seed_b"]) for r in rows} == {("0", "1")}
    assert len(rows) == len(steps) * len(LAYERS) * len(DEFAULT_METRICS)
    assert all(math.isfinite(float(r["score"])) for r in rows)
    epochs = {int(r["step"]): float(r["epoch"]) for r in rows}
    assert epochs[4] == pytest.approx(1.0)

    with (Path(trainer.log_dir) / "metrics.csv").open() as handle:
        logged = list(csv.DictReader(handle))
    key = "align/id/layer2.0.conv2/procrustes"
    logged_steps = sorted({int(r["step"]) for r in logged if r.get(key)})
    assert logged_steps == steps
    assert any(r.get("align_std/id/pre_logits/linear_cka") for r in logged)


def test_callback_scores_are_those_of_the_core(tmp_path, small_data):
    from convergence_monitor import alignment
    from convergence_monitor.capture import capture_features

    module = MultiSeedModule(seeds=[0, 1])
    callback = ConvergenceCallback(layers=["layer2.0.conv1"], metrics=["procrustes"], first_epoch_points=1,
                                  metric_workers=2)
    trainer = _trainer(tmp_path, [callback], max_steps=1)
    trainer.fit(module, datamodule=small_data)
    rows = _read_rows(Path(trainer.log_dir) / "alignment.csv")
    final = [r for r in rows if r["step"] == "1"]
    images = callback.probe_sets[0].images
    features = [capture_features(m, images, ["layer2.0.conv1"])[0]["layer2.0.conv1"] for m in module.models]
    expected = alignment.procrustes_score(features[0], features[1])
    assert float(final[0]["score"]) == pytest.approx(expected, abs=1e-12)


def test_callback_restores_train_flags(tmp_path, small_data):
    module = MultiSeedModule(seeds=[0, 1])
    frozen = module.models[0].layer1[0].bn1
    recorder = _ScoreRecorder()
    callback = ConvergenceCallback(layers=LAYERS, first_epoch_points=3)

    class Freeze(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            frozen.eval()

    trainer = _trainer(tmp_path, [Freeze(), callback, recorder], max_steps=3)
    trainer.fit(module, datamodule=small_data)
    assert recorder.flags
    for flags in recorder.flags:
        assert flags["models.0.layer1.0.bn1"] is False
        assert flags["models.0.layer1.0.conv1"] is True
        assert flags["models.1"] is True


def test_callback_without_seed_interface_says_what_to_add(tmp_path, small_data):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(784, 10)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0].flatten(1)).logsumexp(1).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    with pytest.raises(TypeError, match=r"no seed_models\(\) method.*mapping from seed label"):
        _trainer(tmp_path, [ConvergenceCallback()]).fit(Plain(), datamodule=small_data)


def test_callback_unknown_metric_fails_at_construction():
    with pytest.raises(ValueError, match=r"unknown metric 'cca'.*procrustes"):
        ConvergenceCallback(metrics=["procrustes", "cca"])


def test_callback_unknown_layer_fails_at_start(tmp_path, small_data):
    callback = ConvergenceCallback(layers=["layer9.conv1"])
    with pytest.raises(ValueError, match=r"layer 'layer9.conv1' not found"):
        _trainer(tmp_path, [callback]).fit(MultiSeedModule(seeds=[0, 1]), datamodule=small_data)


def test_callback_empty_probe_set_fails_at_start(tmp_path, small_data):
    callback = ConvergenceCallback(probe_set=torch.empty(0, 1, 28, 28))
    with pytest.raises(ValueError, match="empty"):
        _trainer(tmp_path, [callback]).fit(MultiSeedModule(seeds=[0, 1]), datamodule=small_data)


def test_callback_falls_back_to_validation_subset(tmp_path, caplog):
    class NoProbeData(pl.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.inner = MNISTDataModule(probe_size=30, val_size=80, batch_size=16)

        def setup(self, stage=None):
            self.inner.setup(stage)

        def train_dataloader(self):
            return self.inner.train_dataloader()

        def val_dataloader(self):
            return self.inner.val_dataloader()

    callback = ConvergenceCallback(layers=["pre_logits"], metrics=["linear_cka"], probe_size=50, first_epoch_points=1)
    with caplog.at_level("INFO"):
        _trainer(tmp_path, [callback], max_steps=1).fit(MultiSeedModule(seeds=[0, 1]), datamodule=NoProbeData())
    assert len(callback.probe_sets[0]) == 50
    assert "subset" in caplog.text
    assert "validation set" in caplog.text


def test_nan_seed_is_reported_and_others_still_measured(tmp_path):
    data = MNISTDataModule(probe_size=60, val_size=60, batch_size=16, num_seeds=3)
    module = MultiSeedModule(seeds=[0, 1, 2])

    class Poison(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            with torch.no_grad():
                pl_module.models[2].conv1[0].weight.fill_(float("nan"))

    callback = ConvergenceCallback(layers=["conv1.0", "pre_logits"], metrics=["procrustes"], first_epoch_points=2)
    with pytest.warns(UserWarning) as caught:
        trainer = _trainer(tmp_path, [Poison(), callback], max_steps=2)
        trainer.fit(module, datamodule=data)
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"seed 2: .*non-finite activations at layer 'conv1.0'", m) for m in messages)
    assert any(re.search(r"seed 2: training loss is nan at step 1", m) for m in messages)
    assert not any(re.search(r"seed [01]: training loss", m) for m in messages)
    rows = _read_rows(Path(trainer.log_dir) / "alignment.csv")
    after = [r for r in rows if r["step"] == "2"]
    assert len(after) == 3 * 2  # every pair keeps its row
    for row in after:
        value = float(row["score"])
        assert math.isnan(value) == ("2" in (row["seed_a"], row["seed_b"]))


def test_wandb_offline_run_holds_the_same_keys(isolated_home, small_data, caplog):
    from wandb_reader import read_history_keys

    wandb_logger = WandbLogger(project="cm-test", save_dir=str(isolated_home))
    csv_logger = CSVLogger(isolated_home, name="run")
    callback = ConvergenceCallback(layers=["conv1.0", "pre_logits"], metrics=["procrustes", "linear_cka"],
                                   first_epoch_points=2)
    with caplog.at_level("WARNING"):
        trainer = _trainer(isolated_home, [callback], loggers=[csv_logger, wandb_logger], max_steps=2)
        trainer.fit(MultiSeedModule(seeds=[0, 1]), datamodule=small_data)
        wandb_logger.experiment.finish()
    assert "logging offline" in caplog.text
    assert "wandb sync" in caplog.text

    runs = list((isolated_home / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    keys, steps = read_history_keys(runs[0])
    expected = {f"align/id/{layer}/{metric}" for layer in ("conv1.0", "pre_logits")
                for metric in ("procrustes", "linear_cka")}
    assert expected <= keys
    assert {0, 1, 2} <= steps


@pytest.mark.slow
def test_bare_callback_uses_defaults(tmp_path, small_data, caplog):
    from pytorch_lightning.callbacks import LearningRateMonitor

    callback = ConvergenceCallback()
    with caplog.at_level("INFO"):
        trainer = _trainer(tmp_path, [callback, LearningRateMonitor(logging_interval="step")], max_steps=1,
                           log_every_n_steps=1)
        trainer.fit(MultiSeedModule(seeds=[0, 1]), datamodule=small_data)
    assert "MNISTDataModule.probe_dataloader()" in caplog.text
    rows = _read_rows(Path(trainer.log_dir) / "alignment.csv")
    assert len({r["layer"] for r in rows}) == 12
    assert {r["metric"] for r in rows} == set(DEFAULT_METRICS)
    assert {int(r["step"]) for r in rows} == {0, 1}
    with (Path(trainer.log_dir) / "metrics.csv").open() as handle:
        header = handle.readline()
    assert "lr-SGD/seed_0" in header
    assert "lr-SGD/seed_1" in header


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"metrics": "procrustes"}, TypeError, r"metrics must be a list of names.*\['procrustes'\]"),
        ({"layers": []}, ValueError, "layers must name at least one layer"),
        ({"batch_size": 0}, ValueError, "batch_size must be at least 1, got 0"),
        ({"max_units": 0}, ValueError, "max_units must be at least 2 or None, got 0"),
        ({"metric_workers": 0}, ValueError, "metric_workers must be a positive integer or None, got 0"),
        ({"metrics": ["procrustes_distance"]}, ValueError, r"records scores only.*procrustes_distance"),
        ({"probe_size": 12}, ValueError, r"probe_size=12 must be at least 3 × folds = 15"),
    ],
)
def test_callback_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ConvergenceCallback(**kwargs)


def test_probe_set_of_wrong_shape_fails_at_start(tmp_path, small_data):
    callback = ConvergenceCallback(probe_set=torch.randn(40, 3, 28, 28), layers=["pre_logits"])
    with pytest.raises(ValueError, match=r"probe set 'id': images of shape \(3, 28, 28\) do not fit the network"):
        _trainer(tmp_path, [callback]).fit(MultiSeedModule(seeds=[0, 1]), datamodule=small_data)


def test_probe_set_rejects_nan_and_integer_images():
    from convergence_monitor import ProbeSet

    images = torch.zeros(5, 1, 4, 4)
    images[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"1 images contain NaN or inf values \(first index 3\)"):
        ProbeSet("bad", images)
    with pytest.raises(TypeError, match="expected float images"):
        ProbeSet("raw", torch.zeros(5, 1, 4, 4, dtype=torch.uint8))


def test_underdetermined_layer_warns(tmp_path, small_data):
    callback = ConvergenceCallback(layers=["pre_logits"], metrics=["procrustes"], first_epoch_points=1)
    with pytest.warns(UserWarning, match=r"layer 'pre_logits': 512 units but only 48 training samples"):
        _trainer(tmp_path, [callback], max_steps=1).fit(MultiSeedModule(seeds=[0, 1]), datamodule=small_data)


def test_null_rows_at_final_step_match_the_core(tmp_path, small_data):
    from convergence_monitor import alignment
    from convergence_monitor.capture import capture_features

    module = MultiSeedModule(seeds=[0, 1])
    callback = ConvergenceCallback(layers=["layer1.0.conv2"], metrics=["soft_matching"], null_draws=3,
                                   null_metrics=["soft_matching"], first_epoch_points=1)
    trainer = _trainer(tmp_path, [callback], max_steps=1)
    trainer.fit(module, datamodule=small_data)
    rows = _read_rows(Path(trainer.log_dir) / "alignment.csv")
    nulls = {r["metric"]: float(r["score"]) for r in rows if "@" in r["metric"]}
    assert set(nulls) == {"soft_matching@rotated", "soft_matching@rotated_p",
                          "soft_matching@shuffled", "soft_matching@shuffled_p"}
    assert {r["step"] for r in rows if "@" in r["metric"]} == {"1"}

    images = callback.probe_sets[0].images
    features = [capture_features(m, images, ["layer1.0.conv2"])[0]["layer1.0.conv2"] for m in module.models]
    for kind in ("rotated", "shuffled"):
        expected = alignment.null_scores("soft_matching", features[0], features[1], kind=kind, draws=3)
        assert nulls[f"soft_matching@{kind}"] == pytest.approx(float(expected.null.mean()), abs=1e-12)
        assert nulls[f"soft_matching@{kind}_p"] == pytest.approx(expected.p_value)

import csv
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule, ProbeSet

LAYERS = ["conv1.0", "layer2.0.conv2", "pre_logits"]
METRICS = ["procrustes", "linear_cka"]


def _fit(tmp_path, callback, data, max_steps=2):
    trainer = pl.Trainer(max_steps=max_steps, limit_val_batches=1, logger=CSVLogger(tmp_path, name="run"),
                         callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", num_sanity_val_steps=0)
    module = MultiSeedModule(seeds=[0, 1])
    trainer.fit(module, datamodule=data)
    return trainer, module


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def data():
    return MNISTDataModule(probe_size=50, val_size=50, batch_size=16, num_seeds=2)


def test_shift_probes_get_rows_keys_and_summary(tmp_path, data):
    spec = {"families": ["gaussian_noise", "fog"], "severities": [4], "natural": ["uci_digits"]}
    callback = ConvergenceCallback(layers=LAYERS, metrics=METRICS, shift_probes=spec, first_epoch_points=2)
    trainer, _ = _fit(tmp_path, callback, data)
    run_dir = Path(trainer.log_dir)
    probes = {"id", "gaussian_noise-4", "fog-4", "uci_digits"}

    rows = _rows(run_dir / "alignment.csv")
    for step in (0, 1, 2):
        at_step = [r for r in rows if int(r["step"]) == step]
        assert {r["probe"] for r in at_step} == probes
        assert len(at_step) == len(probes) * len(LAYERS) * len(METRICS)

    logged = _rows(run_dir / "metrics.csv")
    keys = set().union(*(r for r in logged if any(r.values())))
    for probe in probes - {"id"}:
        assert f"drop/{probe}/pre_logits/procrustes" in keys
        assert f"shift/{probe}/accuracy_drop" in keys
        assert f"shift/{probe}/frechet_distance" in keys
        assert f"shift_trend/{probe}/linear_cka" in keys

    summary = _rows(run_dir / "shift_summary.csv")
    assert len(summary) == 3 * len(LAYERS) * len(METRICS)
    for row in summary:
        assert float(row["drop"]) == pytest.approx(float(row["id_score"]) - float(row["score"]))
    stats = _rows(run_dir / "probe_stats.csv")
    assert {r["probe"] for r in stats} == probes


def test_probe_set_equal_to_id_gives_zero_drop(tmp_path, data):
    data.setup("fit")
    images01, labels = data.probe_images01()
    same = ProbeSet("same", data.normalize(images01), labels)
    callback = ConvergenceCallback(layers=LAYERS, metrics=METRICS, shift_probes=[same], first_epoch_points=2)
    trainer, _ = _fit(tmp_path, callback, data)
    logged = _rows(Path(trainer.log_dir) / "metrics.csv")
    drops = [float(v) for r in logged for k, v in r.items() if k.startswith("drop/same/") and v]
    assert len(drops) == 3 * len(LAYERS) * len(METRICS)
    assert all(d == 0.0 for d in drops)
    accuracy_drops = [float(r["shift/same/accuracy_drop"]) for r in logged if r.get("shift/same/accuracy_drop")]
    assert accuracy_drops and all(d == 0.0 for d in accuracy_drops)
    frechet = [float(r["shift/same/frechet_distance"]) for r in logged if r.get("shift/same/frechet_distance")]
    assert all(abs(d) < 1e-6 for d in frechet)


def test_accuracy_drop_uses_each_probe_sets_labels(tmp_path, data):
    data.setup("fit")
    images01, labels = data.probe_images01()
    relabeled = ProbeSet("relabeled", data.normalize(images01), (labels + 1) % 10)
    callback = ConvergenceCallback(layers=["pre_logits"], metrics=["linear_cka"], shift_probes=[relabeled],
                                   first_epoch_points=1)
    trainer, module = _fit(tmp_path, callback, data, max_steps=1)

    images = data.normalize(images01)
    expected = []
    with torch.no_grad():
        for model in module.models:
            model.eval()
            predictions = model(images).argmax(1)
            expected.append(float((predictions == labels).double().mean() - (predictions == (labels + 1) % 10)
                                  .double().mean()))
    logged = _rows(Path(trainer.log_dir) / "metrics.csv")
    final = [float(r["shift/relabeled/accuracy_drop"]) for r in logged
             if r.get("shift/relabeled/accuracy_drop") and int(r["step"]) == 1]
    assert len(final) == 1
    assert final[0] == pytest.approx(sum(expected) / 2, abs=1e-9)
    assert not math.isnan(final[0])


def test_shift_metrics_must_be_subset():
    with pytest.raises(ValueError, match="must be a subset of metrics"):
        ConvergenceCallback(metrics=["procrustes"], shift_metrics=["linear_cka"])


def test_final_shift_schedule_scores_last_step_only(tmp_path, data):
    spec = {"families": ["gaussian_noise"], "severities": [4], "natural": []}
    callback = ConvergenceCallback(layers=LAYERS, metrics=METRICS, shift_probes=spec, first_epoch_points=2,
                                   shift_schedule="final")
    trainer, _ = _fit(tmp_path, callback, data, max_steps=3)
    run_dir = Path(trainer.log_dir)

    rows = _rows(run_dir / "alignment.csv")
    probes_by_step = {}
    for row in rows:
        probes_by_step.setdefault(int(row["step"]), set()).add(row["probe"])
    assert len(probes_by_step) >= 3
    assert max(probes_by_step) == 3
    for step in sorted(probes_by_step)[:-1]:
        assert probes_by_step[step] == {"id"}
    assert probes_by_step[3] == {"id", "gaussian_noise-4"}

    summary = _rows(run_dir / "shift_summary.csv")
    assert len(summary) == len(LAYERS) * len(METRICS)
    assert all(math.isfinite(float(row["drop"])) for row in summary)
    stats = _rows(run_dir / "probe_stats.csv")
    assert {int(r["step"]) for r in stats if r["probe"] == "gaussian_noise-4"} == {3}


def test_shift_schedule_rejects_unknown_value():
    with pytest.raises(ValueError, match="shift_schedule"):
        ConvergenceCallback(shift_schedule="sometimes")

import csv
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule, WandbLogger
from convergence_monitor.wandb_panels import (
    FINAL_TABLE_PREFIX,
    HEATMAP_PREFIX,
    ID_TABLE_KEY,
    PANEL_PREFIXES,
    SCALAR_PREFIXES,
    SEED_PAIR_TABLE_KEY,
    STEP_KEY,
    WANDB_DISTINCT_METRIC_LIMIT,
    WandbPanels,
    count_wandb_keys,
    panels_for_loggers,
    wandb_key_counts,
)

LAYERS = ["conv1.0", "pre_logits"]
METRICS = ["procrustes", "linear_cka"]
SHIFTED = "gaussian_noise-3"
VERSIONS = {"torch", "torchvision", "timm", "pytorch_lightning", "numpy", "scipy", "POT", "wandb",
            "convergence_monitor"}


@pytest.fixture(scope="module")
def wandb_run(isolated_home_module):
    """Train 2 seeds for 2 steps with a CSV and an offline W&B logger, and return the W&B run file and paths."""
    isolated_home = isolated_home_module
    data = MNISTDataModule(probe_size=50, val_size=50, batch_size=16, num_seeds=2)
    module = MultiSeedModule(seeds=[0, 1])
    callback = ConvergenceCallback(
        layers=LAYERS, metrics=METRICS, first_epoch_points=2,
        shift_probes={"families": ["gaussian_noise"], "severities": [3], "natural": []},
    )
    wandb_logger = WandbLogger(project="cm-test", save_dir=str(isolated_home), group="mnist-test", job_type="train")
    csv_logger = CSVLogger(isolated_home, name="run")
    trainer = pl.Trainer(
        max_steps=2, limit_val_batches=1, logger=[csv_logger, wandb_logger], callbacks=[callback],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    wandb_logger.experiment.finish()

    runs = list((isolated_home / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    return {"path": runs[0], "callback": callback, "csv": Path(csv_logger.log_dir) / "metrics.csv",
            "run_dir": runs[0].parent}


def _panel_rows(history: list[dict]) -> list[dict]:
    return [row for row in history if any(key.split("/")[0] in PANEL_PREFIXES for key in row)]


def test_panels_declare_step_axes(wandb_run):
    from wandb_reader import read_metric_definitions

    definitions = read_metric_definitions(wandb_run["path"])
    assert STEP_KEY in definitions
    assert definitions["align/epoch"]["step_metric"] == STEP_KEY
    for prefix in SCALAR_PREFIXES:
        assert definitions[f"{prefix}/*"]["step_metric"] == STEP_KEY, prefix
        assert definitions[f"{prefix}/*"]["summary"] == {"last"}, prefix
    for prefix in PANEL_PREFIXES:
        assert definitions[f"{prefix}/*"]["step_metric"] == STEP_KEY, prefix


def test_panels_write_reproducible_config(wandb_run):
    from wandb_reader import read_config, read_run_info

    config = read_config(wandb_run["path"])["convergence_monitor"]
    probes = {probe.name: probe for probe in wandb_run["callback"].probe_sets}
    assert config["seeds"] == ["0", "1"]
    assert config["layers"] == LAYERS
    assert config["metrics"] == METRICS
    assert config["hparams"]["arch"] == "resnet10t"
    assert config["hparams"]["seeds"] == [0, 1]
    assert (config["folds"], config["fold_seed"]) == (5, 0)
    assert (config["sample_mode"], config["token_mode"]) == ("center", "cls")
    assert set(config["probe_sets"]) == {"id", SHIFTED}
    for name, entry in config["probe_sets"].items():
        assert entry["fingerprint"] == probes[name].fingerprint
        assert entry["size"] == len(probes[name])
    assert set(config["versions"]) == VERSIONS
    assert all(config["versions"].values())
    assert config["seed_pair_metric"] == "procrustes"
    assert config["planned_steps"] == wandb_run["callback"].planned_steps

    assert read_run_info(wandb_run["path"]) == {"group": "mnist-test", "job_type": "train"}


def test_panels_log_tables_and_heatmaps_per_step(wandb_run):
    from wandb_reader import read_history

    planned = wandb_run["callback"].planned_steps
    rows = [row for row in _panel_rows(read_history(wandb_run["path"])) if ID_TABLE_KEY in row]
    assert [row[STEP_KEY] for row in rows] == planned
    for row in rows:
        assert row[ID_TABLE_KEY]["_type"] == "table-file"
        assert row[ID_TABLE_KEY]["nrows"] == len(LAYERS) * len(METRICS)
        assert row[SEED_PAIR_TABLE_KEY]["_type"] == "table-file"
        assert row[SEED_PAIR_TABLE_KEY]["nrows"] == len(LAYERS) * 2
        for metric in METRICS:
            assert row[f"{HEATMAP_PREFIX}/{metric}"]["_type"] == "image-file"

    # The heatmap grows by one column per probe step.
    widths = [row[f"{HEATMAP_PREFIX}/procrustes"]["width"] for row in rows]
    assert widths == sorted(widths)
    assert widths[0] < widths[-1]


def test_panels_table_holds_logged_means(wandb_run):
    import json

    from wandb_reader import read_history

    rows = [row for row in _panel_rows(read_history(wandb_run["path"])) if ID_TABLE_KEY in row]
    last = rows[-1][ID_TABLE_KEY]
    table = json.loads((wandb_run["run_dir"] / "files" / last["path"]).read_text())
    assert table["columns"] == ["layer", "depth", "metric", "score", "std"]
    with wandb_run["csv"].open() as handle:
        logged = [r for r in csv.DictReader(handle) if r["step"] == str(rows[-1][STEP_KEY])]
    for layer, depth, metric, score, _std in table["data"]:
        key = f"align/id/{layer}/{metric}"
        expected = next(float(r[key]) for r in logged if r.get(key))
        assert score == pytest.approx(expected)
        assert depth == LAYERS.index(layer)


def test_panels_log_final_tables(wandb_run):
    import json

    from wandb_reader import read_history

    rows = [row for row in _panel_rows(read_history(wandb_run["path"])) if any(
        key.startswith(FINAL_TABLE_PREFIX) for key in row)]
    assert len(rows) == 1
    assert rows[0][STEP_KEY] == 2
    for metric in METRICS:
        entry = rows[0][f"{FINAL_TABLE_PREFIX}/{metric}"]
        assert entry["_type"] == "table-file"
        table = json.loads((wandb_run["run_dir"] / "files" / entry["path"]).read_text())
        assert table["columns"] == ["layer", "depth", "id_score", f"drop/{SHIFTED}"]
        assert [line[0] for line in table["data"]] == LAYERS
        assert all(isinstance(line[3], float) for line in table["data"])


def test_csv_logger_gets_no_panel_objects(wandb_run):
    with wandb_run["csv"].open() as handle:
        columns = next(csv.reader(handle))
    assert "align/id/pre_logits/procrustes" in columns
    assert not [c for c in columns if c.split("/")[0] in PANEL_PREFIXES]


def test_key_count_matches_the_run(wandb_run):
    from wandb_reader import read_history

    keys = set()
    for row in read_history(wandb_run["path"]):
        keys.update(key for key in row if key == STEP_KEY or key.split("/")[0] in SCALAR_PREFIXES + PANEL_PREFIXES)
    expected = count_wandb_keys(n_probes=2, n_layers=len(LAYERS), n_metrics=len(METRICS), n_seeds=2)
    assert len(keys) == expected


def test_key_count_of_default_job():
    counts = wandb_key_counts(n_probes=8, n_layers=12, n_metrics=5, n_seeds=4)
    assert counts["align"] == counts["align_std"] == 8 * 12 * 5
    assert counts["drop"] == 7 * 12 * 5
    assert counts["shift"] == 14
    assert counts["shift_trend"] == 35
    assert counts["probe_acc"] == 32
    assert counts["tables"] + counts["heatmaps"] == 12
    assert count_wandb_keys(8, 12, 5, 4) == 1475
    assert count_wandb_keys(8, 12, 5, 4) < WANDB_DISTINCT_METRIC_LIMIT


def test_key_count_rejects_empty_job():
    with pytest.raises(ValueError, match="n_layers must be at least 1, got 0"):
        count_wandb_keys(n_probes=1, n_layers=0, n_metrics=1, n_seeds=2)


def test_no_wandb_logger_gives_no_panels(tmp_path):
    assert panels_for_loggers([CSVLogger(tmp_path)], callback=None, pl_module=None) == []


class _Config(dict):
    def update(self, values, allow_val_change=False):
        super().update(values)


class _BrokenExperiment:
    """Accepts config updates, but every ``log`` call fails as a stopped W&B service would."""

    def __init__(self):
        self.calls = 0
        self.config = _Config()

    def log(self, payload):
        self.calls += 1
        raise RuntimeError("W&B service stopped")


class _FakeLogger:
    def __init__(self):
        self.experiment = _BrokenExperiment()


class _FakeCallback:
    metrics = ("linear_cka", "permutation")
    layers = ["pre_logits"]
    probe_sets = []
    folds, fold_seed, sample_mode, token_mode = 5, 0, "center", "cls"
    planned_steps = [0, 1]
    run_dir = None


class _FakeModule:
    def seed_models(self):
        return {"0": None, "1": None}


def test_failing_panel_is_disabled_and_logged_once(caplog):
    panel = WandbPanels(_FakeLogger(), _FakeCallback(), _FakeModule())
    assert panel.seed_pair_metric == "linear_cka"
    logged = {"align/id/pre_logits/linear_cka": 0.5, "align/id/pre_logits/permutation": 0.25}
    with caplog.at_level(logging.ERROR, logger="convergence_monitor.wandb_panels"):
        panel.on_probe_step(0, 0.0, [], logged)
        panel.on_probe_step(1, 0.5, [], logged)
        panel.on_train_end(1)
    assert panel.enabled is False
    assert panel.logger.experiment.calls == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: W&B service stopped" in errors[0].getMessage()
    assert "step 0" in errors[0].getMessage()


def test_unmeasured_seed_pair_metric_is_rejected():
    with pytest.raises(ValueError, match=r"seed_pair_metric 'procrustes' is not measured"):
        WandbPanels(_FakeLogger(), _FakeCallback(), _FakeModule(), seed_pair_metric="procrustes")

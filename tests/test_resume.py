import csv
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule, WandbLogger

SCRIPT = Path(__file__).resolve().parent / "scripts" / "train_tiny.py"


def _run(run_dir, *args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *args], capture_output=True, text=True,
                          timeout=600, env=env)


def _table(path: Path) -> list[tuple]:
    with path.open(newline="") as handle:
        return [tuple(row.values()) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_killed_run_resumes_to_same_table(tmp_path):
    whole = _run(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = _run(tmp_path / "killed", "--kill-after-step", "8")
    assert killed.returncode == -signal.SIGKILL
    table = tmp_path / "killed" / "log" / "version_0" / "alignment.csv"
    steps_before = {int(row[0]) for row in _table(table)}
    assert max(steps_before) > 6  # rows after the epoch-end checkpoint exist and must be replaced

    resumed = _run(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = _table(tmp_path / "whole" / "log" / "version_0" / "alignment.csv")
    got = _table(table)
    assert got == expected
    steps = [int(row[0]) for row in got]
    assert steps == sorted(steps)

    # TensorBoard got every probe step once: the steps logged before the kill are not sent again.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "killed" / "log" / "version_0"))
    events.Reload()
    logged = [event.step for event in events.Scalars("align/id/conv1.0/procrustes")]
    assert sorted(logged) == sorted(set(steps))


@pytest.mark.slow
def test_resume_with_changed_probe_set_is_an_error(tmp_path):
    first = _run(tmp_path / "run", "--kill-after-step", "7")
    assert first.returncode == -signal.SIGKILL
    resumed = _run(tmp_path / "run", "--resume", "--probe-size", "45")
    assert resumed.returncode != 0
    assert "differs from the one in the checkpoint" in resumed.stderr


def _fit(tmp_path, loggers, name="run"):
    callback = ConvergenceCallback(layers=["conv1.0", "pre_logits"], metrics=["procrustes"], first_epoch_points=3)
    trainer = pl.Trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0, logger=loggers,
                         callbacks=[callback], accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, deterministic=True)
    pl.seed_everything(0)
    data = MNISTDataModule(probe_size=40, val_size=40, batch_size=16, num_seeds=2)
    trainer.fit(MultiSeedModule(seeds=[0, 1]), datamodule=data)
    return trainer, callback


def test_failing_wandb_never_stops_training(isolated_home, caplog):
    wandb_logger = WandbLogger(project="cm-test", save_dir=str(isolated_home))
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("network is unreachable")

    wandb_logger.experiment.log = unreachable  # what a lost connection looks like to the logger
    with caplog.at_level(logging.ERROR):
        trainer, _ = _fit(isolated_home, [CSVLogger(isolated_home, name="run"), wandb_logger])
    wandb_logger.experiment.finish()
    assert trainer.global_step == 3
    assert calls  # the scalar logger and the panels each tried once, then stopped
    rows = _table(Path(trainer.log_dir) / "alignment.csv")
    assert sorted({int(r[0]) for r in rows}) == [0, 1, 2, 3]
    messages = [r.getMessage() for r in caplog.records if "W&B logging failed" in r.getMessage()]
    assert len(messages) == 1
    assert "ConnectionError: network is unreachable" in messages[0]


def test_same_config_gives_identical_curves(tmp_path):
    first, _ = _fit(tmp_path / "a", CSVLogger(tmp_path / "a", name="run"))
    second, _ = _fit(tmp_path / "b", CSVLogger(tmp_path / "b", name="run"))
    assert _table(Path(first.log_dir) / "alignment.csv") == _table(Path(second.log_dir) / "alignment.csv")

"""SeedPerRankStrategy: seeds split across processes must train and score as in one process.

The end-to-end tests launch a training script the way users do, three
times. The first run trains the seeds side by side in one process. The
second uses ``SeedPerRankStrategy`` on 2 CPU processes, which Lightning's
subprocess launcher starts and which talk over gloo on 127.0.0.1. The third
resumes the first run's checkpoint on 2 processes. All use 3 seeds with
per-seed data order, so rank 0 trains seeds 0 and 2, rank 1 trains seed 1,
and each seed's batches depend on its global index.
"""

import copy
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from convergence_monitor import MultiSeedModule
from convergence_monitor.data import PerSeedBatchSampler
from convergence_monitor.distributed import merge_seed_checkpoints, seed_indices_of_rank, select_seed_checkpoint

TINY_RESNET = {"channels": [8, 16, 16, 16], "stem_width": 8}

TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    torch.set_num_threads(1)

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule
    from convergence_monitor.distributed import SeedPerRankStrategy

    mode, root = sys.argv[1], sys.argv[2]
    resume = sys.argv[3] if len(sys.argv) > 3 else None
    module = MultiSeedModule(seeds=[0, 1, 2], data_order="per_seed", lr_schedule="cosine",
                             model_kwargs={"channels": [8, 16, 16, 16], "stem_width": 8})
    data = MNISTDataModule(probe_size=40, val_size=40, batch_size=8, data_order="per_seed", num_seeds=3)
    callback = ConvergenceCallback(layers=["layer1.0.conv1", "pre_logits"], metrics=["procrustes", "linear_cka"],
                                   folds=4, first_epoch_points=2, null_draws=2, null_metrics=["linear_cka"],
                                   null_kinds=["shuffled"])
    checkpoints = ModelCheckpoint(dirpath=f"{root}/checkpoints", every_n_epochs=1, save_top_k=-1)
    split = mode == "split"
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
        devices=2 if split else 1, strategy=SeedPerRankStrategy() if split else "auto",
        logger=CSVLogger(root, name="run"), callbacks=[callback, checkpoints], log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    """
)


def _launch(script: Path, mode: str, root: Path, resume: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)
    command = [sys.executable, str(script), mode, str(root), *([str(resume)] if resume else [])]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(process: subprocess.Popen, name: str) -> None:
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, f"{name} run failed with exit code {process.returncode}:\n{output[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train the same 3 seeds in one process, on 2 processes, and on 2 processes resumed from step 2."""
    root = tmp_path_factory.mktemp("seed_per_rank")
    script = root / "train.py"
    script.write_text(TRAIN_SCRIPT)
    single, split, resumed = root / "single", root / "split", root / "resumed"

    # The one-process and two-process runs start together (3 processes in all) to save wall time.
    processes = {"one-process": _launch(script, "single", single), "two-process": _launch(script, "split", split)}
    for name, process in processes.items():
        _wait(process, name)
    _wait(_launch(script, "split", resumed, single / "checkpoints" / "epoch=0-step=2.ckpt"), "resumed")
    return {"single": single, "split": split, "resumed": resumed}


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _scores(run: Path) -> dict[tuple, str]:
    rows = _rows(run / "run" / "version_0" / "alignment.csv")
    return {(r["step"], r["probe"], r["layer"], r["metric"], r["seed_a"], r["seed_b"]): r["score"] for r in rows}


def _checkpoint(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=False)


def _assert_same_tensors(found, expected, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(found, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert list(found) == list(expected), f"{where}: keys {list(found)} != {list(expected)}"
        for key in expected:
            _assert_same_tensors(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(found) == len(expected), f"{where}: length {len(found)} != {len(expected)}"
        for i, (a, b) in enumerate(zip(found, expected)):
            _assert_same_tensors(a, b, f"{where}[{i}]")
    else:
        assert found == expected, f"{where}: {found!r} != {expected!r}"


# ----------------------------------------------------------------- end to end


@pytest.mark.slow
def test_split_run_scores_equal_one_process(runs):
    expected = _scores(runs["single"])
    found = _scores(runs["split"])
    assert {key[4:] for key in expected} == {("0", "1"), ("0", "2"), ("1", "2")}
    assert any(key[3] == "linear_cka@shuffled" for key in expected), "the null rows are missing"
    assert sorted(found) == sorted(expected)
    for key, score in expected.items():
        assert found[key] == score, f"{key}: {found[key]} on 2 processes, {score} in one"


@pytest.mark.slow
def test_split_run_probe_stats_equal_one_process(runs):
    expected = _rows(runs["single"] / "run" / "version_0" / "probe_stats.csv")
    found = _rows(runs["split"] / "run" / "version_0" / "probe_stats.csv")
    assert {r["seed"] for r in expected} == {"0", "1", "2"}
    assert found == expected


@pytest.mark.slow
def test_split_checkpoint_equals_one_process(runs):
    for name in ("epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"):
        expected = _checkpoint(runs["single"], name)
        found = _checkpoint(runs["split"], name)
        assert {key.split(".")[1] for key in found["state_dict"]} == {"0", "1", "2"}
        _assert_same_tensors(found["state_dict"], expected["state_dict"], f"{name} state_dict")
        _assert_same_tensors(found["optimizer_states"], expected["optimizer_states"], f"{name} optimizer_states")
        _assert_same_tensors(found["lr_schedulers"], expected["lr_schedulers"], f"{name} lr_schedulers")
        assert found["global_step"] == expected["global_step"]


@pytest.mark.slow
def test_split_per_seed_losses_equal_one_process(runs):
    # Equal per-seed losses at every step mean every seed saw its one-process batches, in order.
    def losses(run: Path) -> dict[tuple, str]:
        rows = _rows(run / "run" / "version_0" / "metrics.csv")
        return {(r["step"], key): r[key] for r in rows for key in r
                if key.startswith(("train/loss/seed_", "val/loss/seed_")) and r[key]}

    expected = losses(runs["single"])
    found = losses(runs["split"])
    assert {key for _, key in expected} >= {f"train/loss/seed_{s}" for s in range(3)}
    assert len({step for step, key in expected if key.startswith("train/")}) == 4
    assert found == expected


@pytest.mark.slow
def test_resume_on_two_processes_matches_uninterrupted(runs):
    expected = _checkpoint(runs["single"], "epoch=1-step=4.ckpt")
    found = _checkpoint(runs["resumed"], "epoch=1-step=4.ckpt")
    _assert_same_tensors(found["state_dict"], expected["state_dict"], "resumed state_dict")
    _assert_same_tensors(found["optimizer_states"], expected["optimizer_states"], "resumed optimizer_states")
    resumed_scores = _scores(runs["resumed"])
    expected_scores = _scores(runs["single"])
    assert {key[0] for key in resumed_scores} >= {"3", "4"}
    for key, score in resumed_scores.items():
        assert score == expected_scores[key], f"{key}: {score} after resume, {expected_scores[key]} uninterrupted"


# ----------------------------------------------------------------- in one process


def test_sampler_seed_indices_match_full_batches():
    full = PerSeedBatchSampler(num_samples=50, batch_size=5, num_seeds=3, base_seed=4)
    part = PerSeedBatchSampler(num_samples=50, batch_size=5, num_seeds=3, base_seed=4, seed_indices=[2, 0])
    for sampler in (full, part):
        sampler.set_epoch(1)
    for whole, partial in zip(full, part):
        assert partial == whole[10:15] + whole[0:5]
    seen = [index for batch in PerSeedBatchSampler(50, 5, 3, 4, seed_indices=[1]) for index in batch]
    assert sorted(seen) == list(range(50))


def test_sampler_rejects_unknown_seed_index():
    with pytest.raises(ValueError, match=r"seed_indices must be .* in \[0, 3\), got \[3\]"):
        PerSeedBatchSampler(num_samples=50, batch_size=5, num_seeds=3, seed_indices=[3])


def test_seed_indices_go_round_robin():
    assert seed_indices_of_rank(5, 0, 2) == [0, 2, 4]
    assert seed_indices_of_rank(5, 1, 2) == [1, 3]
    assert seed_indices_of_rank(2, 2, 3) == []
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        seed_indices_of_rank(4, 2, 2)


def test_shard_keeps_initial_weights():
    whole = MultiSeedModule(seeds=[5, 6, 7], model_kwargs=TINY_RESNET)
    shard = MultiSeedModule(seeds=[5, 6, 7], model_kwargs=TINY_RESNET)
    shard.shard_seeds(0, 2)
    assert list(shard.seed_models()) == ["5", "7"]
    assert shard.seed_indices == [0, 2]
    for local, global_index in enumerate(shard.seed_indices):
        _assert_same_tensors(shard.models[local].state_dict(), whole.models[global_index].state_dict(), "weights")
    shard.shard_seeds(0, 2)
    with pytest.raises(RuntimeError, match="already sharded for rank 0 of 2"):
        shard.shard_seeds(1, 2)


def test_shard_rejects_more_ranks_than_seeds():
    with pytest.raises(ValueError, match="3 processes need at least 3 seeds, got 2"):
        MultiSeedModule(seeds=[0, 1], model_kwargs=TINY_RESNET).shard_seeds(2, 3)


def _trained_state(module: MultiSeedModule) -> dict:
    """Return a Lightning-style checkpoint of ``module`` after one SGD step with momentum and a cosine schedule."""
    groups = [{"params": list(m.parameters()), "name": f"seed_{s}"} for s, m in zip(module.seed_labels, module.models)]
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    torch.manual_seed(0)
    images = torch.randn(4, 1, 28, 28)
    sum(model(images).square().mean() for model in module.models).backward()
    optimizer.step()
    scheduler.step()
    return {"state_dict": module.state_dict(), "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [scheduler.state_dict()]}


def test_checkpoint_select_then_merge_round_trips():
    whole = MultiSeedModule(seeds=[0, 1, 2], model_kwargs=TINY_RESNET)
    checkpoint = _trained_state(whole)
    parts = []
    for rank in range(2):
        indices = seed_indices_of_rank(3, rank, 2)
        part = select_seed_checkpoint(checkpoint, indices, num_seeds=3)
        part["seed_indices"] = indices
        parts.append(part)
    assert [g["name"] for g in parts[0]["optimizer_states"][0]["param_groups"]] == ["seed_0", "seed_2"]
    assert len(parts[1]["lr_schedulers"][0]["base_lrs"]) == 1

    # A rank-local module loads its part strictly, as Lightning restores it.
    local = MultiSeedModule(seeds=[0, 1, 2], model_kwargs=TINY_RESNET)
    local.shard_seeds(0, 2)
    local.load_state_dict(parts[0]["state_dict"], strict=True)

    merged = merge_seed_checkpoints(parts)
    _assert_same_tensors(merged["state_dict"], checkpoint["state_dict"], "state_dict")
    _assert_same_tensors(merged["optimizer_states"], checkpoint["optimizer_states"], "optimizer_states")
    _assert_same_tensors(merged["lr_schedulers"], checkpoint["lr_schedulers"], "lr_schedulers")


def test_select_rejects_other_seed_count():
    checkpoint = _trained_state(MultiSeedModule(seeds=[0, 1, 2], model_kwargs=TINY_RESNET))
    with pytest.raises(ValueError, match=r"seed indices \[0, 1, 2\], but the module trains 4 seeds"):
        select_seed_checkpoint(checkpoint, [0, 2], num_seeds=4)
    two_groups = {"state_dict": copy.deepcopy(checkpoint["state_dict"]),
                  "optimizer_states": checkpoint["optimizer_states"]}
    two_groups["optimizer_states"][0] = {**two_groups["optimizer_states"][0],
                                         "param_groups": two_groups["optimizer_states"][0]["param_groups"][:2]}
    with pytest.raises(ValueError, match="2 parameter groups for 3 seeds"):
        select_seed_checkpoint(two_groups, [0, 2], num_seeds=3)


def test_merge_rejects_missing_seed_index():
    parts = [{"seed_indices": [0, 2], "state_dict": {}}, {"seed_indices": [3], "state_dict": {}}]
    with pytest.raises(ValueError, match=r"seed indices \[0, 2, 3\], expected each of 0..2 once"):
        merge_seed_checkpoints(parts)


def test_merge_rejects_duplicate_seed_index():
    parts = [{"seed_indices": [0, 1], "state_dict": {}}, {"seed_indices": [1], "state_dict": {}}]
    with pytest.raises(ValueError, match=r"seed indices \[0, 1, 1\], expected each of 0..2 once"):
        merge_seed_checkpoints(parts)

"""A tiny multi-seed run for resume and fault tests.

    python train_tiny.py RUN_DIR [--resume] [--kill-after-step N] [--probe-noise X]

Trains 2 seeds for 2 epochs of 6 steps on MNIST with a checkpoint at each
epoch end. ``--kill-after-step`` sends SIGKILL to the process itself once the
optimizer step passes N, which is what a hard crash or preemption does.
"""

import argparse
import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from convergence_monitor import ConvergenceCallback, MNISTDataModule, MultiSeedModule


class KillAfter(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--probe-size", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0)

    run_dir = Path(args.run_dir)
    callbacks = [
        ConvergenceCallback(layers=["conv1.0", "pre_logits"], metrics=["procrustes", "linear_cka"],
                            first_epoch_points=4),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, every_n_epochs=1, save_top_k=-1),
    ]
    if args.kill_after_step is not None:
        callbacks.append(KillAfter(args.kill_after_step))
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=6, limit_val_batches=1, num_sanity_val_steps=0,
        logger=TensorBoardLogger(run_dir, name="log", version=0), callbacks=callbacks, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
    )
    data = MNISTDataModule(probe_size=args.probe_size, val_size=40, batch_size=16, num_seeds=2)
    ckpt = run_dir / "checkpoints" / "last.ckpt" if args.resume else None
    trainer.fit(MultiSeedModule(seeds=[0, 1], lr_schedule="constant"), datamodule=data, ckpt_path=ckpt)


if __name__ == "__main__":
    main()

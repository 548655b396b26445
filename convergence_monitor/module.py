"""A LightningModule that trains several seeds of one architecture side by side."""

from __future__ import annotations

import warnings
from typing import Literal, Mapping, Sequence

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
import torch
import torch.nn.functional as F
from torch import nn

from .data import DATA_ORDERS
from .distributed import gather_seed_values, seed_indices_of_rank
from .models import build_model


class MultiSeedModule(pl.LightningModule):
    """Train ``len(seeds)`` independently initialized copies of ``arch`` in one process.

    Seeds never share parameters or gradients: the loss is the sum of the
    per-seed losses, so each seed's gradient is that of its own loss. One
    optimizer holds one parameter group per seed, named ``seed_<s>``, so the
    global step counts training steps of one seed and a learning-rate monitor
    labels each seed. Gradient clipping (``Trainer(gradient_clip_val=...)``)
    is applied to each seed's parameters separately, never across seeds.

    The callback interface is ``seed_models()``: a mapping from seed label to
    a network that takes probe images and returns logits.

    Under ``convergence_monitor.distributed.SeedPerRankStrategy`` each
    process keeps only its share of the seeds (``shard_seeds``), and
    ``seed_models()``, ``forward`` and the optimizer cover those seeds. Every
    rank still logs ``<stage>/loss/seed_<s>`` and ``<stage>/acc/seed_<s>`` for
    every seed of the run: the per-seed values are all-gathered each step,
    so rank 0's loggers write the same curves as a one-process run.

    Args:
        arch: timm model name, or ``torchvision.<name>``.
        seeds: initialization seeds, one network each.
        num_classes: classifier outputs.
        in_chans: input channels.
        data_order: ``shared`` (one batch for all seeds) or ``per_seed`` (the
            batch holds one chunk per seed, see ``convergence_monitor.data``).
        optimizer: ``sgd`` (with Nesterov momentum) or ``adamw``.
        lr: learning rate, the same for every seed.
        momentum: SGD momentum.
        weight_decay: decoupled for AdamW, L2 for SGD.
        lr_schedule: ``constant`` or ``cosine`` (to zero over the whole run).
        model_kwargs: extra keyword arguments for the model builder.
    """

    def __init__(
        self,
        arch: str = "resnet10t",
        seeds: Sequence[int] = (0, 1, 2, 3),
        num_classes: int = 10,
        in_chans: int = 1,
        data_order: Literal["shared", "per_seed"] = "shared",
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_schedule: Literal["constant", "cosine"] = "cosine",
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must list at least one initialization seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        if data_order not in DATA_ORDERS:
            raise ValueError(f"data_order must be one of {DATA_ORDERS}, got {data_order!r}")
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.save_hyperparameters()
        self.seeds = seeds
        # Indices into self.seeds of the networks in self.models, which are all of them until shard_seeds().
        self.seed_indices = list(range(len(seeds)))
        self._shard: tuple[int, int] | None = None
        self._diverged_seeds: set[str] = set()
        self.models = nn.ModuleList(
            build_model(arch, num_classes=num_classes, in_chans=in_chans, seed=s, **(model_kwargs or {}))
            for s in seeds
        )

    @property
    def seed_labels(self) -> list[str]:
        """Labels of the seeds this process trains, in the order of ``self.models``."""
        return [str(self.seeds[i]) for i in self.seed_indices]

    def shard_seeds(self, rank: int, world_size: int) -> None:
        """Keep only the networks that process ``rank`` of ``world_size`` trains: ``seeds[rank::world_size]``.

        ``SeedPerRankStrategy`` calls this once the process group is up,
        before optimizers are built. Every network was built in ``__init__``
        from its own seed, so a kept network starts from the same weights as
        in a one-process run. Calling it again with the same arguments does
        nothing.
        """
        if self._shard == (rank, world_size):
            return
        if self._shard is not None:
            raise RuntimeError(
                f"the seeds are already sharded for rank {self._shard[0]} of {self._shard[1]}; "
                "create a new MultiSeedModule to train with another number of processes"
            )
        indices = seed_indices_of_rank(len(self.seeds), rank, world_size)
        if not indices:
            raise ValueError(
                f"{world_size} processes need at least {world_size} seeds, got {len(self.seeds)} ({self.seeds}); "
                "add seeds or use fewer devices"
            )
        # NOTE: every process builds every seed's network in __init__ and drops the others here,
        # which costs CPU memory and start-up time for large models and many seeds.
        self.models = nn.ModuleList(self.models[i] for i in indices)
        self.seed_indices = indices
        self._shard = (rank, world_size)

        # Lightning suggests sync_dist=True for epoch-level values in a distributed run. These values are
        # gathered per seed already, and averaging them across ranks would not change them.
        warnings.filterwarnings(
            "ignore", message=r"It is recommended to use `self.log\('(train|val)/(loss|acc)[/']", category=UserWarning
        )

    def seed_models(self) -> Mapping[str, nn.Module]:
        """Return the networks to probe, keyed by seed label."""
        return dict(zip(self.seed_labels, self.models))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the logits of every seed, shape (seeds, batch, classes)."""
        return torch.stack([model(images) for model in self.models])

    def _per_seed_inputs(self, batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = batch
        if self.hparams.data_order == "shared" or not self.training:
            return [(images, labels)] * len(self.models)
        if images.shape[0] % len(self.models):
            raise ValueError(
                f"data_order='per_seed' needs batches of seeds × batch_size images, got {images.shape[0]} "
                f"for {len(self.models)} seeds; use the datamodule's per_seed sampler"
            )
        return list(zip(images.chunk(len(self.models)), labels.chunk(len(self.models))))

    def _step(self, batch, stage: str) -> torch.Tensor:
        total = 0.0
        per_seed = []
        for model, (images, targets) in zip(self.models, self._per_seed_inputs(batch)):
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
            per_seed.append(torch.stack([loss.detach(), accuracy]))
            total = total + loss

        # Rows (loss, accuracy) for every seed of the run, so every rank logs every seed.
        values = self._all_seed_values(torch.stack(per_seed))
        on_step = stage == "train"
        for label, (loss, accuracy) in zip(map(str, self.seeds), values):
            if stage == "train" and not torch.isfinite(loss) and label not in self._diverged_seeds:
                # Seeds share no parameters, so one seed's NaN loss leaves the others' gradients finite.
                self._diverged_seeds.add(label)
                rank_zero_warn(f"seed {label}: training loss is {float(loss)} at step {self.global_step}; "
                               "the other seeds keep training and being measured")
            self.log(f"{stage}/loss/seed_{label}", loss, on_step=on_step, on_epoch=not on_step)
            self.log(f"{stage}/acc/seed_{label}", accuracy, on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}/loss", values[:, 0].mean(), on_step=on_step, on_epoch=True, prog_bar=True)
        return total

    def _all_seed_values(self, values: torch.Tensor) -> torch.Tensor:
        """Return ``values`` (one row per local seed) for every seed of the run, gathered from every rank."""
        if self._shard is None or self._shard[1] == 1:
            return values
        return gather_seed_values(values, len(self.seeds))

    def on_train_start(self) -> None:
        if self._shard is None or self.hparams.data_order != "per_seed":
            return
        # A sharded per-seed run needs batches that contain only this rank's seeds, each drawn in its global order.
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        drawn = getattr(sampler, "seed_indices", None)
        if drawn is not None and list(drawn) != self.seed_indices:
            raise ValueError(
                f"rank {self._shard[0]} trains seed indices {self.seed_indices} but the training batch sampler draws "
                f"the orders of seed indices {list(drawn)}; use a MultiSeedDataModule, which draws this rank's seeds"
            )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip each seed's gradients on their own, so one seed's spike cannot shrink another's step."""
        if not gradient_clip_val:
            return
        for model in self.models:
            parameters = [p for p in model.parameters() if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": list(model.parameters()), "name": f"seed_{label}"}
                  for label, model in zip(self.seed_labels, self.models)]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0,
                                        weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

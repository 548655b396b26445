"""A LightningModule that trains several seeds of one architecture side by side."""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
import torch
import torch.nn.functional as F
from torch import nn

from .data import DATA_ORDERS
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
        self._diverged_seeds: set[str] = set()
        self.models = nn.ModuleList(
            build_model(arch, num_classes=num_classes, in_chans=in_chans, seed=s, **(model_kwargs or {}))
            for s in seeds
        )

    @property
    def seed_labels(self) -> list[str]:
        return [str(s) for s in self.seeds]

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
        for label, model, (images, targets) in zip(self.seed_labels, self.models, self._per_seed_inputs(batch)):
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
            if stage == "train" and not torch.isfinite(loss) and label not in self._diverged_seeds:
                # Seeds share no parameters, so one seed's NaN loss leaves the others' gradients finite.
                self._diverged_seeds.add(label)
                rank_zero_warn(f"seed {label}: training loss is {float(loss)} at step {self.global_step}; "
                               "the other seeds keep training and being measured")
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
            on_step = stage == "train"
            self.log(f"{stage}/loss/seed_{label}", loss, on_step=on_step, on_epoch=not on_step)
            self.log(f"{stage}/acc/seed_{label}", accuracy, on_step=on_step, on_epoch=not on_step)
            total = total + loss
        self.log(f"{stage}/loss", total / len(self.models), on_step=stage == "train", on_epoch=True, prog_bar=True)
        return total

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

"""Weights & Biases logging that falls back to offline mode without credentials."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)


def wandb_credentials_found() -> bool:
    """Return whether W&B can authenticate: ``WANDB_API_KEY`` or a netrc entry for the API host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode() -> str:
    """Return the W&B mode: ``WANDB_MODE`` if set, else online with credentials, else offline.

    ``WANDB_MODE=dryrun``, the older name of offline mode that Lightning's own
    ``WandbLogger`` writes into the environment, is returned as ``offline``.
    """
    mode = os.environ.get("WANDB_MODE")
    if mode == "dryrun":
        return "offline"
    if mode:
        return mode
    return "online" if wandb_credentials_found() else "offline"


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline unless credentials exist or ``WANDB_MODE`` requests another mode.

    An offline run is written under ``<save_dir>/wandb/offline-run-*``; upload
    it later with ``wandb sync <that directory>``. One log line names it.
    """

    def __init__(self, *args, offline: bool | None = None, **kwargs):
        if offline is None:
            mode = resolve_wandb_mode()
        else:
            mode = "offline" if offline else "online"
        self._resolved_mode = mode
        self._failed = False
        super().__init__(*args, offline=mode == "offline", **kwargs)

    def log_metrics(self, metrics, step=None) -> None:
        # A W&B failure (no network, a crashed service process) must not stop training or the local table.
        if self._failed:
            return
        try:
            super().log_metrics(metrics, step)
        except Exception as error:  # noqa: BLE001 - any W&B failure is reported once, then W&B is skipped
            self._failed = True
            log.error("W&B logging failed at step %s and is turned off for this run (%s: %s); "
                      "alignment.csv and the other loggers are unaffected", step, type(error).__name__, error)

    @property
    def experiment(self):
        run = super().experiment
        if self._resolved_mode == "offline" and not getattr(self, "_offline_announced", False):
            self._offline_announced = True
            run_dir = Path(getattr(run, "dir", "") or ".").parent
            log.warning(
                "W&B: no credentials found, logging offline to %s; upload it later with `wandb sync %s`",
                run_dir, run_dir,
            )
        return run

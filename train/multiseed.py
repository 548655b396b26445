"""Train several seeds side by side and measure their alignment while they learn.

    python train/multiseed.py                       # configs/mnist.yaml
    python train/multiseed.py --config configs/cifar10.yaml
    python train/multiseed.py --trainer.max_epochs 1 --model.seeds "[0, 1]"

Every option of the module, the datamodule, the trainer and its callbacks
can be set from YAML or the command line (``--help`` lists them). The last
line printed names the run directory, which contains ``alignment.csv``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import WandbLogger

from convergence_monitor import MultiSeedDataModule, MultiSeedModule

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mnist.yaml"


class MultiSeedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The datamodule needs the seed count for per-seed batches, the module the data order.
        parser.link_arguments("model.seeds", "data.init_args.num_seeds", compute_fn=len)
        parser.link_arguments("data.init_args.data_order", "model.data_order")


def main(args: list[str] | None = None) -> Path:
    """Parse the configuration, train, and return the run directory."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if args is None else args)
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in args) and "--help" not in args:
        args = ["--config", str(DEFAULT_CONFIG), *args]
    cli = MultiSeedCLI(
        MultiSeedModule,
        MultiSeedDataModule,
        subclass_mode_data=True,
        run=False,
        args=args,
        save_config_kwargs={"overwrite": True},
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    # Close W&B runs here because W&B prints its sync hint when a run closes, and the run directory must be the
    # last line printed.
    for logger in cli.trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
    run_dir = Path(cli.trainer.log_dir or cli.trainer.default_root_dir).resolve()
    print(f"run directory: {run_dir}")
    return run_dir


if __name__ == "__main__":
    main()

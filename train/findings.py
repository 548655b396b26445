"""Train the findings job for one architecture family and measure the four convergent-learning findings.

    python train/findings.py                 # ResNet family, 5 seeds, 3 epochs
    python train/findings.py --arch vit      # ViT family, 5 seeds, 10 epochs
    python train/findings.py --quick         # smoke test: 3 seeds, 12 steps

The job runs ``configs/findings/mnist_<arch>.yaml`` through the same
LightningCLI as ``train/multiseed.py``, so the ConvergenceCallback writes
``alignment.csv``, ``probe_stats.csv`` and ``shift_summary.csv`` into the
run directory as usual. After training, this script

1. captures every seed's final features on the in-distribution probe set
   and saves them as ``final_features.pt``;
2. scores soft matching against the rotated-basis null with ``--null-draws``
   Haar rotations per seed pair and layer, a different rotation stream per
   pair, and pools the draws of all pairs of a layer (see
   ``findings_analysis.pooled_null``). The per-pair null means and p-values
   are appended to ``alignment.csv`` as ``soft_matching@rotated`` and
   ``soft_matching@rotated_p`` rows, so the standard report draws them;
3. writes the findings tables and figures under ``<run dir>/findings/``
   and the standard report under ``<run dir>/report/``.

``--analyze RUN_DIR`` repeats steps 2-3 on a finished run (from its saved
features), without training. ``--analyze RUN_DIR --layers NAME ...``
instead rebuilds the seeds from ``final_state.pt``, captures other layers
(for example post-activation outputs) on the same probe set, and writes
their final scores and rotated-basis null under ``RUN_DIR/layers_<tag>/``.
The last line printed names the run directory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import findings_analysis  # noqa: E402
from multiseed import MultiSeedCLI  # noqa: E402

from convergence_monitor import ConvergenceCallback, MultiSeedDataModule, MultiSeedModule  # noqa: E402
from convergence_monitor import alignment  # noqa: E402
from convergence_monitor.capture import capture_features  # noqa: E402
from convergence_monitor.sinks import ALIGNMENT_COLUMNS, CsvTable  # noqa: E402

log = logging.getLogger("findings")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "findings"
NULL_METRIC = "soft_matching"
FEATURES_FILE = "final_features.pt"
TIMINGS_FILE = "timings.json"
# Smallest pooled null count that can give p < 0.01: (1 + 0) / (100 + 1). With 99 draws the floor is 0.01.
MIN_POOLED_DRAWS = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("resnet", "vit"), default="resnet",
                        help="architecture family: configs/findings/mnist_<arch>.yaml")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 seeds, one epoch cut to 12 steps, 4 null draws per pair")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (at least 2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the config's max_epochs, 3 for resnet, 10 for vit)")
    parser.add_argument("--null-draws", type=int, default=None,
                        help="rotated-basis draws per seed pair and layer (default: enough for 100 pooled draws)")
    parser.add_argument("--analyze", metavar="RUN_DIR", type=Path, default=None,
                        help="skip training; recompute nulls, tables and figures of a finished run")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="with --analyze: score these layers of the saved final weights instead")
    parser.add_argument("--tag", default="extra", help="with --layers: output folder RUN_DIR/layers_<tag>")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER,
                        help="extra LightningCLI arguments after '--', e.g. -- --trainer.max_steps 20")
    args = parser.parse_args(argv)

    if args.layers and args.analyze is None:
        parser.error("--layers needs --analyze RUN_DIR")
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2, got {args.seeds}")
    if args.quick:
        args.seeds = 3
        args.epochs = 1

    pairs = args.seeds * (args.seeds - 1) // 2
    if args.null_draws is None:
        args.null_draws = 4 if args.quick else math.ceil(MIN_POOLED_DRAWS / pairs)
    if args.null_draws < 1:
        parser.error(f"--null-draws must be at least 1, got {args.null_draws}")
    return args


def train(args: argparse.Namespace) -> tuple[Path, ConvergenceCallback, MultiSeedModule, float]:
    """Fit the configured job and return (run directory, callback, module, wall seconds)."""
    name = f"findings_{args.arch}" + ("_quick" if args.quick else "")
    cli_args = [
        "--config", str(CONFIG_DIR / f"mnist_{args.arch}.yaml"),
        "--model.seeds", json.dumps(list(range(args.seeds))),
        "--trainer.logger.init_args.name", name,
    ]
    if args.epochs is not None:
        cli_args += ["--trainer.max_epochs", str(args.epochs)]
    if args.quick:
        cli_args += ["--trainer.limit_train_batches", "12", "--trainer.limit_val_batches", "2"]
    extra = [a for a in args.cli_args if a != "--"]
    cli = MultiSeedCLI(MultiSeedModule, MultiSeedDataModule, subclass_mode_data=True, run=False,
                       args=cli_args + extra, save_config_kwargs={"overwrite": True})
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - started
    run_dir = Path(cli.trainer.log_dir or cli.trainer.default_root_dir).resolve()
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, ConvergenceCallback))
    return run_dir, callback, cli.model, wall


def save_final_features(run_dir: Path, callback: ConvergenceCallback, module: MultiSeedModule) -> Path:
    """Capture each seed's final in-distribution probe features with the callback's settings and save them."""
    probe = callback.probe_sets[0]
    features = {}
    for label, model in module.seed_models().items():
        features[str(label)], _ = capture_features(
            model, probe.images, callback.layers, batch_size=callback.batch_size,
            sample_mode=callback.sample_mode, token_mode=callback.token_mode,
            position_budget=callback.position_budget, max_units=callback.max_units, seed=callback.fold_seed,
        )
    path = run_dir / FEATURES_FILE
    torch.save({"layers": list(callback.layers), "folds": callback.folds, "fold_seed": callback.fold_seed,
                "step": int(module.trainer.global_step), "epoch": float(module.trainer.current_epoch),
                "features": features}, path)
    return path


def recapture_layers(run_dir: Path, layers: list[str], out_dir: Path) -> Path:
    """Rebuild the seeds from ``final_state.pt`` and save their features at ``layers`` on the run's probe set."""
    import yaml

    from convergence_monitor import MNISTDataModule
    from convergence_monitor.probes import ID_PROBE, probe_set_from_loader

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data_args = dict(config["data"]["init_args"])
    # The CLI links data.init_args.data_order to the module, so the saved model section may lack it.
    model_args = {**config["model"], "data_order": data_args.get("data_order", "shared")}
    if config["data"]["class_path"] != "convergence_monitor.MNISTDataModule":
        raise ValueError(f"--layers supports MNISTDataModule runs only, found {config['data']['class_path']}")
    module = MultiSeedModule(**model_args)
    module.load_state_dict(torch.load(run_dir / "final_state.pt", weights_only=True))
    datamodule = MNISTDataModule(**data_args)
    datamodule.setup("fit")
    probe = probe_set_from_loader(ID_PROBE, datamodule.probe_dataloader())
    callback_args = next(c["init_args"] for c in config["trainer"]["callbacks"]
                         if c["class_path"].endswith("ConvergenceCallback"))
    features = {}
    for label, model in module.seed_models().items():
        features[str(label)], _ = capture_features(
            model, probe.images, layers, batch_size=callback_args["batch_size"],
            sample_mode=callback_args["sample_mode"], token_mode=callback_args["token_mode"],
            position_budget=callback_args["position_budget"], max_units=callback_args["max_units"],
            seed=callback_args["fold_seed"],
        )
    out_dir.mkdir(exist_ok=True)
    path = out_dir / FEATURES_FILE
    torch.save({"layers": layers, "folds": callback_args["folds"], "fold_seed": callback_args["fold_seed"],
                "metrics": callback_args["metrics"], "features": features}, path)
    return path


def score_saved_layers(out_dir: Path) -> None:
    """Score every pair of the saved features under the run's metrics and write ``final_scores.csv``."""
    saved = torch.load(out_dir / FEATURES_FILE, weights_only=False)
    rows = []
    for depth, layer in enumerate(saved["layers"]):
        by_seed = {label: by_layer[layer] for label, by_layer in saved["features"].items()}
        scored = alignment.score_pairs(by_seed, saved["metrics"], folds=saved["folds"], seed=saved["fold_seed"],
                                       context=f"layer {layer!r}")
        for (seed_a, seed_b), scores in scored.items():
            for metric, value in scores.items():
                rows.append({"layer": layer, "depth": depth, "metric": metric, "seed_a": seed_a,
                             "seed_b": seed_b, "score": value})
    pd.DataFrame(rows).to_csv(out_dir / "final_scores.csv", index=False)


def rotated_nulls(run_dir: Path, draws: int) -> float:
    """Score soft matching against ``draws`` rotated bases per pair and layer, and return the wall seconds.

    Writes ``null_draws.csv`` (one row per layer, pair and draw, with the
    pair's observed score) and appends per-pair null means and p-values to
    ``alignment.csv``. Pair k (in itertools.combinations order) uses
    rotation seed 1000 + k, so the pooled draws of a layer are independent
    rotations. Every pair uses the run's fold seed, as the callback does.
    """
    saved = torch.load(run_dir / FEATURES_FILE, weights_only=False)
    features, layers = saved["features"], saved["layers"]
    started = time.perf_counter()
    draw_rows, table_rows = [], []
    write_table = (run_dir / "alignment.csv").is_file()
    final_step, epoch = _final_step_and_epoch(run_dir) if write_table else (-1, math.nan)
    for depth, layer in enumerate(layers):
        for index, (seed_a, seed_b) in enumerate(itertools.combinations(sorted(features), 2)):
            result = alignment.null_scores(
                NULL_METRIC, features[seed_a][layer], features[seed_b][layer], kind="rotated", draws=draws,
                seed=1000 + index, fold_seed=saved["fold_seed"], folds=saved["folds"],
                context=f"layer {layer!r}, seeds {seed_a} vs {seed_b}",
            )
            for draw, value in enumerate(result.null):
                draw_rows.append({"layer": layer, "depth": depth, "seed_a": seed_a, "seed_b": seed_b,
                                  "draw": draw, "observed": result.observed, "null": float(value)})
            common = {"step": final_step, "epoch": epoch, "probe": findings_analysis.ID, "layer": layer,
                      "depth": depth, "seed_a": seed_a, "seed_b": seed_b}
            table_rows.append({**common, "metric": f"{NULL_METRIC}@rotated", "score": float(np.mean(result.null))})
            table_rows.append({**common, "metric": f"{NULL_METRIC}@rotated_p", "score": float(result.p_value)})
        log.info("rotated null done for layer %s (%.0f s so far)", layer, time.perf_counter() - started)

    pd.DataFrame(draw_rows).to_csv(run_dir / "null_draws.csv", index=False)
    if not write_table:
        return time.perf_counter() - started
    table = CsvTable(run_dir / "alignment.csv", ALIGNMENT_COLUMNS)
    _drop_null_rows(table.path)
    table.append(table_rows)
    return time.perf_counter() - started


def _drop_null_rows(path: Path) -> None:
    # A repeated --analyze must replace, not duplicate, the rows of an earlier null pass.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    kept = frame.loc[~frame["metric"].str.startswith(f"{NULL_METRIC}@rotated")]
    if len(kept) != len(frame):
        kept.to_csv(path, index=False)


def _final_step_and_epoch(run_dir: Path) -> tuple[int, float]:
    table = pd.read_csv(run_dir / "alignment.csv", usecols=["step", "epoch"])
    step = int(table["step"].max())
    return step, float(table.loc[table["step"] == step, "epoch"].iloc[0])


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    timings: dict[str, float] = {}
    if args.analyze is None:
        run_dir, callback, module, wall = train(args)
        timings["train_and_probe_s"] = wall
        timings.update({f"callback_{key}": float(value) for key, value in callback.timings.items()})
        (run_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n")
        # The weights are saved first, so a failure below still leaves the trained seeds on disk.
        torch.save(module.state_dict(), run_dir / "final_state.pt")
        save_final_features(run_dir, callback, module)
    elif args.layers:
        run_dir = args.analyze.resolve()
        out_dir = run_dir / f"layers_{args.tag}"
        started = time.perf_counter()
        recapture_layers(run_dir, args.layers, out_dir)
        score_saved_layers(out_dir)
        null_s = rotated_nulls(out_dir, args.null_draws)
        findings_analysis.analyze_layers(out_dir)
        log.info("layers %s scored in %.0f s (null %.0f s)", args.layers, time.perf_counter() - started, null_s)
        print(f"run directory: {run_dir}")
        return run_dir
    else:
        run_dir = args.analyze.resolve()
        previous = run_dir / TIMINGS_FILE
        if previous.is_file():
            timings.update(json.loads(previous.read_text()))

    timings["null_draws_per_pair"] = args.null_draws
    timings["null_s"] = rotated_nulls(run_dir, args.null_draws)
    started = time.perf_counter()
    findings_analysis.analyze(run_dir)
    from convergence_monitor.report import build_report

    build_report(run_dir, progress=False)
    timings["analysis_s"] = time.perf_counter() - started
    (run_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n")
    log.info("timings: %s", json.dumps(timings))
    print(f"run directory: {run_dir}")
    return run_dir


if __name__ == "__main__":
    main()

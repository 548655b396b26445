"""``ConvergenceCallback``: cross-seed alignment of a multi-seed module, measured while it trains."""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from threadpoolctl import threadpool_limits

from . import alignment
from .capture import capture_features, eval_mode, resolve_layers
from .probes import ID_PROBE, ProbeSet, probe_set_from_dataset, probe_set_from_loader, probe_set_from_source
from .schedule import ProbeSchedule
from .sinks import ALIGNMENT_COLUMNS, PROBE_STATS_COLUMNS, SHIFT_SUMMARY_COLUMNS, CsvTable, log_to_all

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("linear_regression", "procrustes", "permutation", "soft_matching", "linear_cka")
NULL_KINDS = ("rotated", "shuffled")
SEED_INTERFACE_HELP = (
    "ConvergenceCallback needs a LightningModule with a method seed_models() that returns a mapping "
    "from seed label (str) to an nn.Module taking probe images and returning logits; "
    "convergence_monitor.MultiSeedModule provides it"
)


class ConvergenceCallback(Callback):
    """Score every seed pair at every chosen layer on fixed probe sets while training runs.

    The module must expose ``seed_models() -> Mapping[str, nn.Module]``
    (``MultiSeedModule`` does). At each probe step of ``ProbeSchedule`` the
    callback runs every probe set through every seed in eval mode, captures
    the chosen layers with forward hooks, scores each seed pair with the
    alignment core, and then

    - appends one row per (step, epoch, probe, layer, metric, seed_a, seed_b)
      to ``alignment.csv`` in the run's log directory (flushed per step);
    - sends ``align/<probe>/<layer>/<metric>`` (mean over pairs) and
      ``align_std/<probe>/<layer>/<metric>`` (standard deviation over pairs)
      to every logger in ``trainer.loggers`` in one call, with the optimizer
      step as the step;
    - for each out-of-distribution probe set, sends
      ``drop/<probe>/<layer>/<metric>`` (in-distribution score minus the
      probe set's score) and the shift magnitude ``shift/<probe>/accuracy_drop``
      and ``shift/<probe>/frechet_distance``, and writes per-seed probe
      accuracies to ``probe_stats.csv``.

    Args:
        probe_set: in-distribution probe set: a ``ProbeSet``, an image tensor,
            a Dataset or an image folder. ``None`` takes the datamodule's
            ``probe_dataloader()`` if it has one, otherwise a seeded subset of
            ``probe_size`` validation samples.
        probe_size: size of that validation subset.
        shift_probes: out-of-distribution probe sets: ``ProbeSet`` objects,
            or a mapping ``{"families": [...], "severities": [...],
            "natural": [...]}`` built from the datamodule's probe images by
            ``convergence_monitor.shifts.build_shift_probe_sets``.
        layers: module names or glob patterns (``"layer*.conv2"``) plus
            ``"pre_logits"``; ``None`` for the architecture's defaults.
        metrics: alignment metric names (see ``alignment.list_metrics()``).
        folds: cross-validation folds over probe samples.
        fold_seed: seed of the fold assignment, shared by every pair, layer,
            metric and step so curves are comparable.
        sample_mode: convolution reduction, ``center``, ``mean`` or ``positions``.
        token_mode: transformer token reduction, ``cls`` or ``mean``.
        position_budget: samples kept per layer in ``positions`` mode.
        max_units: layers wider than this keep a fixed subset of
            ``max_units`` units (``None``: keep all), which bounds the
            metric core's p × p matrices. The subset is drawn from
            ``fold_seed`` and the layer width, so every seed and step keeps
            the same unit indices. The default is 1,024 because the fitted
            metrics cost O(p³) time per pair and fold (a 4,096-unit cap
            costs 64 times as much), and because the default probe set
            trains each fold on 800 samples, so wider maps are
            underdetermined anyway. NOTE: on a subsampled layer a unit's
            best partner in another seed is kept only with probability
            max_units / width, so permutation and soft matching scores are
            biased low there; raise ``max_units`` (and the probe size) for
            layers such as ResNet-50's 2,048-unit pre-logits.
        first_epoch_points: log-spaced probe steps in the first epoch.
        interval: probe interval in steps after the first epoch (``None``:
            half an epoch).
        null_draws: chance-baseline draws per pair and layer at the final
            probe step (0 turns nulls off). The p-value resolution is
            ``1 / (null_draws + 1)``.
        null_metrics: metrics that get nulls.
        null_kinds: ``rotated`` (random orthogonal basis) and/or ``shuffled``.
        shift_metrics: metrics scored on the out-of-distribution probe sets
            (``None``: the same as ``metrics``); must be a subset of ``metrics``
            so each has an in-distribution score to subtract from.
        shift_probe_size: keep only the first ``shift_probe_size`` images of
            each out-of-distribution probe set (``None``: all). The
            in-distribution probe order is already random, so this is a
            random subset, the same at every step.
        shift_schedule: when the out-of-distribution probe sets are scored:
            ``every`` probe step, or only the ``final`` one, which makes a
            large battery of severities affordable when only the final drop
            is needed. NOTE: with ``final``, a run that stops early exactly
            on an intermediate probe step gets no shift scores.
        batch_size: probe forward-pass batch size.
        frechet_layer: layer whose features give the Fréchet shift distance
            (``None``: the first chosen layer).
        blas_threads: BLAS threads for the metric round (``None``: leave the
            library default). One thread is the default because OpenBLAS
            threads competing with other processes' threads made the round
            10.9 times slower on a busy 2-core machine, and no faster on a
            quiet one (bench/blas_threads.py, docs/benchmarks.md).
        metric_workers: threads that score the seed pairs of a layer
            concurrently, each with ``blas_threads`` BLAS threads (``None``:
            the CPUs this process may use). Training waits during the
            metric round, so its cores are free. The scores do not depend
            on it.
    """

    def __init__(
        self,
        probe_set: Any = None,
        probe_size: int = 1000,
        shift_probes: Sequence[ProbeSet] | Mapping[str, Any] | None = None,
        layers: Sequence[str] | None = None,
        metrics: Sequence[str] = DEFAULT_METRICS,
        folds: int = 5,
        fold_seed: int = 0,
        sample_mode: str = "center",
        token_mode: str = "cls",
        position_budget: int = 4000,
        max_units: int | None = 1024,
        first_epoch_points: int = 16,
        interval: int | None = None,
        null_draws: int = 0,
        null_metrics: Sequence[str] = ("soft_matching",),
        null_kinds: Sequence[str] = NULL_KINDS,
        shift_metrics: Sequence[str] | None = None,
        shift_probe_size: int | None = None,
        shift_schedule: str = "every",
        batch_size: int = 250,
        frechet_layer: str | None = None,
        blas_threads: int | None = 1,
        metric_workers: int | None = None,
    ):
        super().__init__()
        for name, value in (("metrics", metrics), ("null_metrics", null_metrics), ("layers", layers)):
            if isinstance(value, str):
                raise TypeError(f"{name} must be a list of names, got the string {value!r}; write [{value!r}]")
        if layers is not None and not layers:
            raise ValueError("layers must name at least one layer, or be None for the architecture's defaults")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if metric_workers is not None and (isinstance(metric_workers, bool)
                                           or not isinstance(metric_workers, (int, np.integer)) or metric_workers < 1):
            raise ValueError(f"metric_workers must be a positive integer or None, got {metric_workers!r}")
        if max_units is not None and max_units < 2:
            raise ValueError(f"max_units must be at least 2 or None, got {max_units}")
        known = set(alignment.list_metrics())
        for name in [*metrics, *null_metrics]:
            if name not in known:
                raise ValueError(f"unknown metric {name!r}; accepted metrics: {sorted(known)}")
        if not metrics:
            raise ValueError("metrics must name at least one alignment metric")
        distances = [name for name in metrics if alignment.get_metric(name).kind != "score"]
        if distances:
            # Curves, spreads and drops assume similarities, where higher means more aligned.
            raise ValueError(f"the callback records scores only; {distances} are distances: use "
                             "convergence_monitor.alignment directly for them")
        for kind in null_kinds:
            if kind not in NULL_KINDS:
                raise ValueError(f"unknown null kind {kind!r}; accepted kinds: {NULL_KINDS}")
        if shift_metrics is not None and not set(shift_metrics) <= set(metrics):
            raise ValueError(f"shift_metrics {list(shift_metrics)} must be a subset of metrics {list(metrics)}")
        if shift_probe_size is not None and shift_probe_size < 3 * folds:
            raise ValueError(f"shift_probe_size={shift_probe_size} must be at least 3 × folds = {3 * folds}")
        if shift_schedule not in ("every", "final"):
            raise ValueError(f"shift_schedule must be 'every' or 'final', got {shift_schedule!r}")
        if folds < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        if probe_size < 3 * folds:
            raise ValueError(f"probe_size={probe_size} must be at least 3 × folds = {3 * folds}")
        if null_draws < 0:
            raise ValueError(f"null_draws must be 0 (off) or positive, got {null_draws}")
        if sample_mode not in ("center", "mean", "positions"):
            raise ValueError(f"sample_mode must be 'center', 'mean' or 'positions', got {sample_mode!r}")
        if token_mode not in ("cls", "mean"):
            raise ValueError(f"token_mode must be 'cls' or 'mean', got {token_mode!r}")
        self.probe_source = probe_set
        self.probe_size = probe_size
        self.shift_source = shift_probes
        self.layer_patterns = list(layers) if layers is not None else None
        self.metrics = tuple(metrics)
        self.folds = folds
        self.fold_seed = fold_seed
        self.sample_mode = sample_mode
        self.token_mode = token_mode
        self.position_budget = position_budget
        self.max_units = max_units
        self.schedule = ProbeSchedule(first_epoch_points, interval)
        self.null_draws = null_draws
        self.null_metrics = tuple(null_metrics)
        self.null_kinds = tuple(null_kinds)
        self.shift_metrics = tuple(shift_metrics) if shift_metrics is not None else self.metrics
        self.shift_probe_size = shift_probe_size
        self.shift_schedule = shift_schedule
        self.batch_size = batch_size
        self.frechet_layer = frechet_layer
        self.blas_threads = blas_threads
        self.metric_workers = int(metric_workers) if metric_workers is not None else available_cpus()

        self.probe_sets: list[ProbeSet] = []
        self.layers: list[str] = []
        self.done_steps: list[int] = []
        self.planned_steps: list[int] = []
        self.steps_per_epoch = 1
        self.run_dir: Path | None = None
        self.timings = {"forward_s": 0.0, "metrics_s": 0.0, "probe_steps": 0}
        self._loaded_fingerprints: dict[str, str] | None = None
        self._table: CsvTable | None = None
        self._stats_table: CsvTable | None = None
        self._bad_seeds: set[tuple[str, str]] = set()
        self._null_steps: set[int] = set()
        self.dead_unit_warnings: dict[tuple[str, str], int] = {}
        self._dead_unit_layers_shown: set[str] = set()
        self._underdetermined: set[tuple[str, str]] = set()
        self._panels: list = []
        self._last_logged: dict[str, float] = {}
        self._logged_through = -1  # last step the loggers received before a resume

    # ----------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        seed_models = self._seed_models(pl_module)
        first = next(iter(seed_models.values()))
        self.layers = resolve_layers(first, self.layer_patterns)
        self.probe_sets = [self._build_id_probe(trainer, pl_module)] + self._build_shift_probes(trainer)
        self._check_probe_inputs(first)
        self.run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            self._table = CsvTable(self.run_dir / "alignment.csv", ALIGNMENT_COLUMNS)
            self._stats_table = CsvTable(self.run_dir / "probe_stats.csv", PROBE_STATS_COLUMNS)
        if trainer.is_global_zero:
            from .wandb_panels import panels_for_loggers

            self._panels = panels_for_loggers(trainer.loggers, self, pl_module)
        rank_zero_info(
            f"ConvergenceCallback: {len(pl_module.hparams.get('seeds', seed_models))} seeds, {len(self.layers)} layers, "
            f"{len(self.probe_sets)} probe sets ({', '.join(p.name for p in self.probe_sets)}), "
            f"metrics {', '.join(self.metrics)}; table {self.run_dir / 'alignment.csv'}"
        )

    @torch.no_grad()
    def _check_probe_inputs(self, model: torch.nn.Module) -> None:
        """Run two images of every probe set through one seed, so a shape mismatch fails at start."""
        device = next(model.parameters()).device
        with eval_mode(model):
            for probe in self.probe_sets:
                try:
                    model(probe.images[:2].to(device))
                except RuntimeError as error:
                    raise ValueError(
                        f"probe set {probe.name!r}: images of shape {tuple(probe.images.shape[1:])} do not fit "
                        f"the network ({error}); give images shaped like the training inputs"
                    ) from error

    @staticmethod
    def _seed_models(pl_module: pl.LightningModule) -> Mapping[str, torch.nn.Module]:
        method = getattr(pl_module, "seed_models", None)
        if not callable(method):
            raise TypeError(f"{type(pl_module).__name__} has no seed_models() method. {SEED_INTERFACE_HELP}")
        models = dict(method())
        # Under SeedPerRankStrategy a process holds only its share of the run's seeds.
        seeds = getattr(pl_module, "hparams", {}).get("seeds", models)
        if len(seeds) < 2:
            raise ValueError(f"alignment needs at least 2 seeds, {type(pl_module).__name__} has {len(seeds)}")
        return {str(label): model for label, model in models.items()}

    def _build_id_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeSet:
        if self.probe_source is not None:
            probe = probe_set_from_source(ID_PROBE, self.probe_source)
            origin = "the probe_set argument"
        else:
            datamodule = trainer.datamodule
            if datamodule is not None and hasattr(datamodule, "probe_dataloader"):
                probe = probe_set_from_loader(ID_PROBE, datamodule.probe_dataloader())
                origin = f"{type(datamodule).__name__}.probe_dataloader()"
            else:
                probe = self._probe_from_validation(trainer, pl_module)
                origin = f"a fixed subset (seed {self.fold_seed}) of the validation set"
        if len(probe) < 3 * self.folds:
            raise ValueError(f"the probe set has {len(probe)} samples; {self.folds} folds need at least "
                             f"{3 * self.folds} (3 per fold)")
        rank_zero_info(f"ConvergenceCallback: probe set of {len(probe)} images from {origin}")
        return probe

    def _probe_from_validation(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeSet:
        owner = trainer.datamodule if hasattr(trainer.datamodule, "val_dataloader") else pl_module
        try:
            loaders = owner.val_dataloader()
        except Exception as error:  # noqa: BLE001 - Lightning raises its own type when the hook is missing
            raise ValueError(
                "no probe set: pass probe_set=..., or give the datamodule a probe_dataloader() or a "
                f"val_dataloader() ({type(error).__name__}: {error})"
            ) from error
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = loader.dataset
        if len(dataset) == 0:
            raise ValueError("no probe set: the validation set is empty")
        size = min(self.probe_size, len(dataset))
        indices = np.sort(np.random.default_rng(self.fold_seed).choice(len(dataset), size=size, replace=False))
        return probe_set_from_dataset(ID_PROBE, dataset, indices)

    def _build_shift_probes(self, trainer: pl.Trainer) -> list[ProbeSet]:
        source = self.shift_source
        if not source:
            return []
        if isinstance(source, Mapping):
            from .shifts import build_shift_probe_sets

            if trainer.datamodule is None:
                raise ValueError("shift_probes given as a corruption spec needs a datamodule with probe_images01()")
            probes = build_shift_probe_sets(trainer.datamodule, **dict(source))
        else:
            probes = [p if isinstance(p, ProbeSet) else probe_set_from_source(f"shift{i}", p)
                      for i, p in enumerate(source)]
        if self.shift_probe_size is not None:
            probes = [p if len(p) <= self.shift_probe_size else
                      ProbeSet(p.name, p.images[: self.shift_probe_size],
                               None if p.labels is None else p.labels[: self.shift_probe_size])
                      for p in probes]
        names = [p.name for p in probes]
        if ID_PROBE in names or len(set(names)) != len(names):
            raise ValueError(f"shift probe set names must be unique and not {ID_PROBE!r}, got {names}")
        return list(probes)

    def _check_fingerprints(self) -> None:
        if self._loaded_fingerprints is None:
            return
        current = {p.name: p.fingerprint for p in self.probe_sets}
        for name, fingerprint in self._loaded_fingerprints.items():
            if current.get(name) != fingerprint:
                raise ValueError(
                    f"probe set {name!r} differs from the one in the checkpoint (fingerprint "
                    f"{fingerprint[:12]} then, {str(current.get(name))[:12]} now); resuming would mix "
                    "curves measured on different probe sets: restore the original probe set or start a new run"
                )

    # ----------------------------------------------------------------- hooks

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning restores callback state after setup(), so checkpoint checks sit here.
        self._check_fingerprints()
        if self.done_steps and self._table is not None:
            # A resumed run recomputes the steps after its checkpoint; drop their old rows. The loggers
            # already received those steps before the interruption, so they are not sent again.
            last = max(self.done_steps)
            self._logged_through = self._table.max_step()
            self._table.drop_steps_after(last)
            self._stats_table.drop_steps_after(last)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError("ConvergenceCallback needs a sized training dataloader to place the first-epoch probes")
        self.steps_per_epoch = max(1, int(batches) // max(1, trainer.accumulate_grad_batches))
        total = int(trainer.estimated_stepping_batches)
        self.planned_steps = self.schedule.steps(self.steps_per_epoch, total)
        rank_zero_info(
            f"ConvergenceCallback: {len(self.planned_steps)} probe steps planned over {total} steps "
            f"({self.steps_per_epoch} per epoch)"
        )
        self._maybe_probe(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._maybe_probe(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The final step always gets a probe (and its nulls), whatever stopped training.
        step = trainer.global_step
        if self.dead_unit_warnings:
            total = sum(self.dead_unit_warnings.values())
            rank_zero_info(f"ConvergenceCallback: {total} dead-unit warnings over {len(self.dead_unit_warnings)} "
                           "(probe set, layer) combinations; dead units count as correlation 0")
        if step not in self.done_steps:
            self._probe(trainer, pl_module, final=True)
        elif self.null_draws and step not in self._null_steps:
            # Every rank runs this branch because _null_rows gathers features across ranks.
            seed_models = self._seed_models(pl_module)
            with threadpool_limits(self.blas_threads):
                rows = self._null_rows(trainer, seed_models, step, step / self.steps_per_epoch)
            if self._table is not None:
                self._table.append(rows)
        if trainer.is_global_zero and len(self.probe_sets) > 1:
            trend = self._write_shift_summary(step)
            log_to_all(trainer.loggers, trend, step)
        for panel in self._panels:
            panel.on_train_end(step)

    def _write_shift_summary(self, step: int) -> dict[str, float]:
        """Write ``shift_summary.csv`` (final drop per probe set, layer and metric) and return depth trends.

        The trend ``shift_trend/<probe>/<metric>`` is the Spearman correlation
        between layer depth and the drop: positive when deeper layers lose
        more cross-seed alignment under the shift.
        """
        from scipy.stats import spearmanr

        logged = self._last_logged
        rows, trend = [], {}
        for probe in self.probe_sets[1:]:
            for metric in self.shift_metrics:
                drops = []
                for depth, layer in enumerate(self.layers):
                    id_score = logged.get(f"align/{ID_PROBE}/{layer}/{metric}", float("nan"))
                    score = logged.get(f"align/{probe.name}/{layer}/{metric}", float("nan"))
                    drops.append(id_score - score)
                    rows.append({"step": step, "probe": probe.name, "layer": layer, "depth": depth,
                                 "metric": metric, "id_score": id_score, "score": score, "drop": id_score - score,
                                 "accuracy_drop": logged.get(f"shift/{probe.name}/accuracy_drop", float("nan")),
                                 "frechet_distance": logged.get(f"shift/{probe.name}/frechet_distance",
                                                                float("nan"))})
                finite = np.isfinite(drops)
                value = float("nan")
                if finite.sum() >= 3 and np.ptp(np.asarray(drops)[finite]) > 0:
                    value = float(spearmanr(np.arange(len(drops))[finite], np.asarray(drops)[finite])[0])
                trend[f"shift_trend/{probe.name}/{metric}"] = value
        if self.run_dir is not None:
            table = CsvTable(self.run_dir / "shift_summary.csv", SHIFT_SUMMARY_COLUMNS)
            table.drop_steps_after(-1)
            table.append(rows)
        return trend

    def _maybe_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = trainer.global_step
        if step in self.done_steps or step not in self.planned_steps:
            return
        self._probe(trainer, pl_module, final=step == self.planned_steps[-1])

    # ----------------------------------------------------------------- probing

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, final: bool) -> None:
        step = trainer.global_step
        epoch = step / self.steps_per_epoch
        seed_models = self._seed_models(pl_module)
        rows: list[dict] = []
        stats_rows: list[dict] = []
        logged: dict[str, float] = {"align/epoch": epoch}
        id_means: dict[tuple[str, str], float] = {}
        id_accuracy: dict[str, float] = {}
        id_frechet_features: dict[str, torch.Tensor] = {}

        probe_sets = self.probe_sets if final or self.shift_schedule == "every" else self.probe_sets[:1]
        for probe in probe_sets:
            started = time.perf_counter()
            features, accuracy = self._capture(probe, seed_models)
            features, accuracy = self._gather(trainer, features, accuracy)
            if probe.name == ID_PROBE:
                id_features = features
            self.timings["forward_s"] += time.perf_counter() - started
            if not trainer.is_global_zero:
                # Only rank 0 writes the tables and its loggers, so the other ranks skip scoring.
                continue

            started = time.perf_counter()
            metrics = self.metrics if probe.name == ID_PROBE else self.shift_metrics
            for depth, layer in enumerate(self.layers):
                with threadpool_limits(self.blas_threads):
                    per_pair = self._score_layer(probe.name, layer, features, metrics, step)
                for (seed_a, seed_b), scores in per_pair.items():
                    for metric, value in scores.items():
                        rows.append({"step": step, "epoch": epoch, "probe": probe.name, "layer": layer,
                                     "depth": depth, "metric": metric, "seed_a": seed_a, "seed_b": seed_b,
                                     "score": value})
                for metric in metrics:
                    values = np.array([scores[metric] for scores in per_pair.values()], dtype=float)
                    mean, spread = _mean_and_std(values)
                    logged[f"align/{probe.name}/{layer}/{metric}"] = mean
                    logged[f"align_std/{probe.name}/{layer}/{metric}"] = spread
                    if probe.name == ID_PROBE:
                        id_means[(layer, metric)] = mean
                    else:
                        logged[f"drop/{probe.name}/{layer}/{metric}"] = id_means[(layer, metric)] - mean
            self.timings["metrics_s"] += time.perf_counter() - started

            stats_rows.extend(self._shift_stats(probe, features, accuracy, id_accuracy, id_frechet_features,
                                                step, epoch, logged))

        if final and self.null_draws:
            with threadpool_limits(self.blas_threads):
                rows.extend(self._null_rows(trainer, seed_models, step, epoch, features=id_features))

        self.done_steps.append(step)
        self._last_logged = logged
        self.timings["probe_steps"] += 1
        # Loggers first (flushed), then the table: on resume, a step in the table is one the loggers have.
        if step > self._logged_through:
            log_to_all(trainer.loggers, logged, step)
            if trainer.is_global_zero:
                for panel in self._panels:
                    panel.on_probe_step(step, epoch, rows, logged)
        if trainer.is_global_zero and self._table is not None:
            self._table.append(rows)
            self._stats_table.append(stats_rows)

    def _capture(self, probe: ProbeSet, seed_models: Mapping[str, torch.nn.Module]):
        features: dict[str, dict[str, torch.Tensor]] = {}
        accuracy: dict[str, float] = {}
        for label, model in seed_models.items():
            features[label], logits = capture_features(
                model, probe.images, self.layers, batch_size=self.batch_size, sample_mode=self.sample_mode,
                token_mode=self.token_mode, position_budget=self.position_budget, max_units=self.max_units,
                seed=self.fold_seed,
            )
            if probe.labels is not None and logits.ndim == 2:
                accuracy[label] = float((logits.argmax(dim=1) == probe.labels).double().mean())
        return features, accuracy

    def _gather(self, trainer: pl.Trainer, features, accuracy):
        """Collect every rank's seeds on each rank; a no-op in one process."""
        if trainer.world_size == 1:
            return features, accuracy
        from .distributed import gather_seed_results

        return gather_seed_results(trainer, features, accuracy)

    def _healthy_seeds(self, probe: str, layer: str, features: Mapping[str, Mapping[str, torch.Tensor]],
                       step: int) -> list[str]:
        healthy = []
        for label, by_layer in features.items():
            values = by_layer[layer]
            bad = int((~torch.isfinite(values)).sum())
            if bad == 0:
                healthy.append(label)
                continue
            if (label, layer) not in self._bad_seeds:
                self._bad_seeds.add((label, layer))
                rank_zero_warn(
                    f"seed {label}: {bad} non-finite activations at layer {layer!r} on probe set {probe!r} "
                    f"(step {step}); its pairs are recorded as NaN and the other seeds are still measured"
                )
        return healthy

    def _score_layer(self, probe: str, layer: str, features, metrics: Sequence[str],
                     step: int) -> dict[tuple[str, str], dict[str, float]]:
        labels = list(features)
        healthy = self._healthy_seeds(probe, layer, features, step)
        scored = {}
        if len(healthy) >= 2:
            self._warn_if_underdetermined(probe, layer, [features[label][layer] for label in healthy], metrics)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scored = alignment.score_pairs(
                    {label: features[label][layer] for label in healthy}, metrics, folds=self.folds,
                    seed=self.fold_seed, context=f"probe set {probe!r}, layer {layer!r}, step {step}",
                    workers=self.metric_workers,
                )
            self._forward_warnings(probe, layer, caught)
        nan_scores = {metric: float("nan") for metric in metrics}
        return {pair: dict(scored.get(pair, nan_scores)) for pair in itertools.combinations(labels, 2)}

    def _warn_if_underdetermined(self, probe: str, layer: str, matrices, metrics: Sequence[str]) -> None:
        # With fewer training samples than units, a fitted map is not unique on its null space and
        # held-out scores drop even for identical inputs, so such scores partly reflect the sample count.
        fitted = [name for name in metrics if name in ("linear_regression", "procrustes")]
        samples = int(matrices[0].shape[0])
        # The largest held-out fold has ceil(samples / folds) samples, which leaves the fewest for training.
        train = samples - math.ceil(samples / self.folds)
        units = max(int(matrix.shape[1]) for matrix in matrices)
        if fitted and units > train and (probe, layer) not in self._underdetermined:
            self._underdetermined.add((probe, layer))
            rank_zero_warn(
                f"probe set {probe!r}, layer {layer!r}: {units} units but only {train} training samples per fold, "
                f"so {', '.join(fitted)} scores are biased low (an identical copy scores below 1); "
                "use a larger probe set or max_units below the sample count"
            )

    def _forward_warnings(self, probe: str, layer: str, caught: list[warnings.WarningMessage]) -> None:
        # Dead units recur at every step and fold; show the first per layer and count the rest.
        for record in caught:
            if issubclass(record.category, alignment.DeadUnitWarning):
                key = (probe, layer)
                self.dead_unit_warnings[key] = self.dead_unit_warnings.get(key, 0) + 1
                if layer not in self._dead_unit_layers_shown:
                    self._dead_unit_layers_shown.add(layer)
                    rank_zero_warn(f"{record.message} (later dead-unit warnings for this layer, on any probe set, "
                                   "are only counted)", category=alignment.DeadUnitWarning)
            else:
                rank_zero_warn(str(record.message), category=record.category)

    def _shift_stats(self, probe, features, accuracy, id_accuracy, id_frechet_features, step, epoch, logged):
        frechet_layer = self.frechet_layer or self.layers[0]
        rows = []
        if probe.name == ID_PROBE:
            id_accuracy.update(accuracy)
            for label, by_layer in features.items():
                id_frechet_features[label] = by_layer[frechet_layer]
        distances = {}
        if probe.name != ID_PROBE:
            from .shifts import frechet_distance

            for label, by_layer in features.items():
                try:
                    distances[label] = frechet_distance(id_frechet_features[label], by_layer[frechet_layer])
                except ValueError as error:
                    rank_zero_warn(f"seed {label}: Fréchet distance on probe set {probe.name!r} failed: {error}")
                    distances[label] = float("nan")
            drops = [id_accuracy[s] - accuracy[s] for s in accuracy if s in id_accuracy]
            logged[f"shift/{probe.name}/accuracy_drop"] = float(np.mean(drops)) if drops else float("nan")
            logged[f"shift/{probe.name}/frechet_distance"] = (
                float(np.nanmean(list(distances.values()))) if distances else float("nan"))
        for label in features:
            rows.append({"step": step, "epoch": epoch, "probe": probe.name, "seed": label,
                         "accuracy": accuracy.get(label, float("nan")),
                         "frechet_distance": distances.get(label, 0.0 if probe.name == ID_PROBE else float("nan"))})
            if label in accuracy:
                logged[f"probe_acc/{probe.name}/seed_{label}"] = accuracy[label]
        return rows

    def _null_rows(self, trainer: pl.Trainer, seed_models, step: int, epoch: float,
                   features: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> list[dict]:
        """Score the null baselines on the in-distribution probe set (``features``: its gathered capture)."""
        self._null_steps.add(step)
        probe = self.probe_sets[0]
        if features is None:
            features, _ = self._capture(probe, seed_models)
            features, _ = self._gather(trainer, features, {})
        if not trainer.is_global_zero:
            return []
        rows = []
        for depth, layer in enumerate(self.layers):
            healthy = self._healthy_seeds(probe.name, layer, features, step)
            for seed_a, seed_b in itertools.combinations(healthy, 2):
                for metric in self.null_metrics:
                    for kind in self.null_kinds:
                        options = {"folds": self.folds} if alignment.get_metric(metric).uses_folds else {}
                        result = alignment.null_scores(
                            metric, features[seed_a][layer], features[seed_b][layer], kind=kind,
                            draws=self.null_draws, seed=self.fold_seed, fold_seed=self.fold_seed,
                            context=f"layer {layer!r}, seeds {seed_a} vs {seed_b}", **options,
                        )
                        common = {"step": step, "epoch": epoch, "probe": probe.name, "layer": layer,
                                  "depth": depth, "seed_a": seed_a, "seed_b": seed_b}
                        rows.append({**common, "metric": f"{metric}@{kind}", "score": float(np.mean(result.null))})
                        rows.append({**common, "metric": f"{metric}@{kind}_p", "score": float(result.p_value)})
        return rows

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "done_steps": list(self.done_steps),
            "fingerprints": {p.name: p.fingerprint for p in self.probe_sets},
            "layers": list(self.layers),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done_steps = list(state_dict.get("done_steps", []))
        self._loaded_fingerprints = dict(state_dict.get("fingerprints", {})) or None


def available_cpus() -> int:
    """Return the number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over the finite pair scores; NaN when none is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(finite.mean()), float(finite.std()) if finite.size > 1 else 0.0

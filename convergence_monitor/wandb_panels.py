"""W&B-only objects beside the scalar curves: step axes, run config, tables and heatmaps.

``ConvergenceCallback`` sends its scalar curves to every logger. For each
Lightning ``WandbLogger`` it also keeps one ``WandbPanels`` object, which
writes through ``logger.experiment`` only, so CSV and TensorBoard loggers
never receive these objects:

- at setup, ``define_metric`` declarations that put every alignment curve on
  the ``trainer/global_step`` axis, with the last value as its run summary.
  A ``convergence_monitor`` entry in the run config records everything
  needed to reproduce the numbers: seeds, module hparams, layers, feature
  mode, metrics, folds, probe set fingerprints and library versions;
- at every probe step, one ``experiment.log`` call with the table
  ``align_tables/id_scores`` (layer × metric mean and spread on the
  in-distribution probe set), the table ``align_tables/seed_pairs`` (score
  of every seed pair at every layer for one metric) and one image
  ``align_heatmap/<metric>`` per metric (layers × probe steps so far);
- at the end of training, one table ``align_final/<metric>`` per metric with
  the final in-distribution score per layer and the drop on every
  out-of-distribution probe set.

Distinct W&B keys. W&B recommends keeping the number of distinct metrics in
a project under 10,000 (https://docs.wandb.ai/models/track/limits, section
"Distinct metric count"). ``count_wandb_keys`` counts the keys of one run.
With P probe sets (one in-distribution), L layers, M metrics and S seeds:

    align/*        P·L·M       align_std/*   P·L·M
    drop/*         (P-1)·L·M   shift/*       2·(P-1)
    shift_trend/*  (P-1)·M     probe_acc/*   P·S
    align/epoch, trainer/global_step         2
    tables         2 + M       heatmaps      M

The default job (P = 8: id, 6 corruption sets and uci_digits; L = 12,
M = 5, S = 4) has 1,463 scalar keys and 12 panel keys, 1,475 in all. The
module's own training curves (loss and accuracy per seed) and those of
other callbacks come on top. Runs of one project share keys, so the
project count stays near the per-run count as long as runs use the same
layers and probe sets.

NOTE: the heatmaps are drawn from the probe steps seen in this process. A
run resumed from a checkpoint starts its heatmaps at the resume step, while
the scalar curves and ``alignment.csv`` stay complete.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .probes import ID_PROBE

log = logging.getLogger(__name__)

STEP_KEY = "trainer/global_step"
EPOCH_KEY = "align/epoch"
SCALAR_PREFIXES = ("align", "align_std", "drop", "shift", "shift_trend", "probe_acc")
ID_TABLE_KEY = "align_tables/id_scores"
SEED_PAIR_TABLE_KEY = "align_tables/seed_pairs"
HEATMAP_PREFIX = "align_heatmap"
FINAL_TABLE_PREFIX = "align_final"
PANEL_PREFIXES = ("align_tables", HEATMAP_PREFIX, FINAL_TABLE_PREFIX)
WANDB_DISTINCT_METRIC_LIMIT = 10_000
PREFERRED_SEED_PAIR_METRIC = "procrustes"

# Distribution name in the run config -> module whose __version__ is read.
VERSION_MODULES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "pytorch_lightning": "pytorch_lightning",
    "numpy": "numpy",
    "scipy": "scipy",
    "POT": "ot",
    "wandb": "wandb",
    "convergence_monitor": "convergence_monitor",
}


def wandb_key_counts(n_probes: int, n_layers: int, n_metrics: int, n_seeds: int) -> dict[str, int]:
    """Count the distinct W&B keys of one run, per key family.

    ``n_probes`` includes the in-distribution probe set. The count assumes
    that every probe set has labels (one ``probe_acc`` key per seed) and that
    the out-of-distribution probe sets are scored with every metric (the
    callback's default ``shift_metrics``).
    """
    for name, value in (("n_probes", n_probes), ("n_layers", n_layers), ("n_metrics", n_metrics),
                        ("n_seeds", n_seeds)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    shifted = n_probes - 1
    return {
        "align": n_probes * n_layers * n_metrics,
        "align_std": n_probes * n_layers * n_metrics,
        "drop": shifted * n_layers * n_metrics,
        "shift": 2 * shifted,
        "shift_trend": shifted * n_metrics,
        "probe_acc": n_probes * n_seeds,
        "axes": 2,
        "tables": 2 + n_metrics,
        "heatmaps": n_metrics,
    }


def count_wandb_keys(n_probes: int, n_layers: int, n_metrics: int, n_seeds: int) -> int:
    """Return the number of distinct W&B keys of one run (see ``wandb_key_counts``)."""
    return sum(wandb_key_counts(n_probes, n_layers, n_metrics, n_seeds).values())


def panels_for_loggers(loggers: Sequence, callback, pl_module, seed_pair_metric: str | None = None) -> list:
    """Return one ``WandbPanels`` per Lightning ``WandbLogger`` in ``loggers`` ([] if there is none).

    Each panel has already declared its axes and written the run config. A
    panel whose setup failed is returned disabled, so it logs nothing more.
    """
    from pytorch_lightning.loggers import WandbLogger

    panels = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            panel = WandbPanels(logger, callback, pl_module, seed_pair_metric=seed_pair_metric)
            panel.setup()
            panels.append(panel)
    return panels


def library_versions() -> dict[str, str | None]:
    """Return the version of every library that shapes the scores, None for a missing one."""
    versions = {}
    for name, module_name in VERSION_MODULES.items():
        try:
            versions[name] = str(getattr(importlib.import_module(module_name), "__version__", None))
        except ImportError:
            versions[name] = None
    return versions


class WandbPanels:
    """Tables, heatmaps, step axes and run config for one W&B logger.

    Args:
        logger: a Lightning ``WandbLogger``. Everything goes through
            ``logger.experiment``.
        callback: the ``ConvergenceCallback`` after its setup (layers, metrics
            and probe sets resolved).
        pl_module: the module. Its ``hparams.seeds``, or else its ``seed_models()`` keys, give the seed labels.
        seed_pair_metric: metric of the seed-pair table; ``None`` takes
            ``procrustes`` if the callback measures it, otherwise its first metric.

    Any exception inside a panel is logged once, with its cause, and
    disables the panel; training, the scalar curves and the local tables go on.
    """

    def __init__(self, logger, callback, pl_module, seed_pair_metric: str | None = None):
        metrics = tuple(callback.metrics)
        if seed_pair_metric is None:
            seed_pair_metric = PREFERRED_SEED_PAIR_METRIC if PREFERRED_SEED_PAIR_METRIC in metrics else metrics[0]
        if seed_pair_metric not in metrics:
            raise ValueError(f"seed_pair_metric {seed_pair_metric!r} is not measured by the callback. "
                             f"Choose one of its metrics: {metrics}")
        self.logger = logger
        self.callback = callback
        self.pl_module = pl_module
        self.seed_pair_metric = seed_pair_metric
        self.metrics = metrics
        self.layers = list(callback.layers)
        # Under SeedPerRankStrategy this process trains only its own seeds, so prefer the run's seed list.
        run_seeds = getattr(pl_module, "hparams", {}).get("seeds")
        self.seeds = [str(label) for label in (run_seeds if run_seeds is not None else pl_module.seed_models())]
        self.enabled = True
        self.heatmap_steps: list[int] = []
        self.heatmap_scores: dict[str, list[np.ndarray]] = {metric: [] for metric in metrics}
        self._last_logged: Mapping[str, float] | None = None
        self._config_has_schedule = False

    # ----------------------------------------------------------------- hooks

    def setup(self) -> None:
        """Declare the step axes and write the run config."""
        self._guarded("setup", None, self._setup)

    def on_probe_step(self, step: int, epoch: float, rows: Sequence[Mapping[str, Any]],
                      logged: Mapping[str, float]) -> None:
        """Log this probe step's tables and the heatmaps so far, in one ``experiment.log`` call."""
        self._guarded("a probe step", step, lambda: self._log_probe_step(step, rows, logged))

    def on_train_end(self, step: int) -> None:
        """Log the final score and drop tables, one per metric."""
        self._guarded("the end of training", step, lambda: self._log_final(step))

    def _guarded(self, phase: str, step: int | None, action: Callable[[], None]) -> None:
        if not self.enabled:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001 - a dashboard failure must not stop training
            self.enabled = False
            at_step = "" if step is None else f" at step {step}"
            log.error(
                "W&B panels for run %s failed during %s%s (%s: %s) and are disabled for the rest of the run. "
                "The scalar curves and alignment.csv are not affected.",
                _run_name(self.logger), phase, at_step, type(error).__name__, error, exc_info=error,
            )

    # ----------------------------------------------------------------- setup

    def _setup(self) -> None:
        experiment = self.logger.experiment

        # Lightning's WandbLogger writes the optimizer step as a field named
        # trainer/global_step rather than as W&B's own step, so that field is the x-axis.
        experiment.define_metric(STEP_KEY)
        experiment.define_metric(EPOCH_KEY, step_metric=STEP_KEY, step_sync=True, summary="last")
        for prefix in SCALAR_PREFIXES:
            experiment.define_metric(f"{prefix}/*", step_metric=STEP_KEY, step_sync=True, summary="last")
        for prefix in PANEL_PREFIXES:
            experiment.define_metric(f"{prefix}/*", step_metric=STEP_KEY, step_sync=True)

        self._write_run_config()

    def _write_run_config(self) -> None:
        # The callback plans its probe steps in on_train_start, after setup, so the
        # config is written again at the first probe step to record them.
        config = self._run_config()
        self.logger.experiment.config.update({"convergence_monitor": config}, allow_val_change=True)
        self._config_has_schedule = bool(config["planned_steps"])

    def _run_config(self) -> dict[str, Any]:
        callback = self.callback
        hparams = getattr(self.pl_module, "hparams", {}) or {}
        return {
            "seeds": self.seeds,
            "module": type(self.pl_module).__name__,
            "hparams": {str(key): _jsonable(value) for key, value in dict(hparams).items()},
            "layers": self.layers,
            "metrics": list(self.metrics),
            "shift_metrics": list(getattr(callback, "shift_metrics", self.metrics)),
            "folds": callback.folds,
            "fold_seed": callback.fold_seed,
            "sample_mode": callback.sample_mode,
            "token_mode": callback.token_mode,
            "probe_sets": {probe.name: {"fingerprint": probe.fingerprint, "size": len(probe)}
                           for probe in callback.probe_sets},
            "planned_steps": list(callback.planned_steps),
            "run_dir": None if callback.run_dir is None else str(callback.run_dir),
            "seed_pair_metric": self.seed_pair_metric,
            "versions": library_versions(),
        }

    # ----------------------------------------------------------------- probe steps

    def _log_probe_step(self, step: int, rows: Sequence[Mapping[str, Any]], logged: Mapping[str, float]) -> None:
        import wandb

        if not self._config_has_schedule:
            self._write_run_config()
        self._last_logged = dict(logged)
        self._record_heatmap_column(step, logged)

        payload: dict[str, Any] = {STEP_KEY: step}
        payload[ID_TABLE_KEY] = wandb.Table(columns=["layer", "depth", "metric", "score", "std"],
                                            data=self._id_score_rows(logged))
        payload[SEED_PAIR_TABLE_KEY] = wandb.Table(columns=["layer", "seed_a", "seed_b", "score"],
                                                   data=self._seed_pair_rows(rows))
        for metric in self.metrics:
            payload[f"{HEATMAP_PREFIX}/{metric}"] = wandb.Image(self._draw_heatmap(metric),
                                                                caption=f"{metric}, steps {self.heatmap_steps[0]}"
                                                                        f"-{self.heatmap_steps[-1]}")

        # No step= argument, as in Lightning's WandbLogger.log_metrics. Its calls advance
        # W&B's own step past the optimizer step, and W&B ignores a row whose step= is lower.
        self.logger.experiment.log(payload)

    def _id_score_rows(self, logged: Mapping[str, float]) -> list[list]:
        rows = []
        for depth, layer in enumerate(self.layers):
            for metric in self.metrics:
                rows.append([layer, depth, metric, _finite_or_none(logged.get(f"align/{ID_PROBE}/{layer}/{metric}")),
                             _finite_or_none(logged.get(f"align_std/{ID_PROBE}/{layer}/{metric}"))])
        return rows

    def _seed_pair_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[list]:
        # Both orders of each pair, so the table pivots into a symmetric seed × seed matrix.
        table = []
        for row in rows:
            if row["probe"] != ID_PROBE or row["metric"] != self.seed_pair_metric:
                continue
            score = _finite_or_none(row["score"])
            table.append([row["layer"], str(row["seed_a"]), str(row["seed_b"]), score])
            table.append([row["layer"], str(row["seed_b"]), str(row["seed_a"]), score])
        return table

    def _record_heatmap_column(self, step: int, logged: Mapping[str, float]) -> None:
        columns = {metric: np.array([_float_or_nan(logged.get(f"align/{ID_PROBE}/{layer}/{metric}"))
                                     for layer in self.layers]) for metric in self.metrics}

        # A step seen again (the final probe repeated after a resume) replaces its column.
        if step in self.heatmap_steps:
            index = self.heatmap_steps.index(step)
            for metric, column in columns.items():
                self.heatmap_scores[metric][index] = column
            return
        self.heatmap_steps.append(step)
        for metric, column in columns.items():
            self.heatmap_scores[metric].append(column)

    def _draw_heatmap(self, metric: str) -> np.ndarray:
        """Draw the layer × probe step heatmap of ``metric`` and return it as an RGB array."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        scores = np.stack(self.heatmap_scores[metric], axis=1)
        finite = scores[np.isfinite(scores)]

        # Fixed 0..1 colors keep steps comparable; a metric that leaves that range widens it.
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = max(1.0, float(finite.max())) if finite.size else 1.0

        width = min(16.0, 4.0 + 0.3 * len(self.heatmap_steps))
        height = min(12.0, 1.5 + 0.3 * len(self.layers))
        figure = Figure(figsize=(width, height), dpi=80)
        canvas = FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        image = axes.imshow(scores, aspect="auto", cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        axes.set_yticks(range(len(self.layers)), labels=self.layers, fontsize=7)
        tick_every = max(1, len(self.heatmap_steps) // 12)
        ticks = list(range(0, len(self.heatmap_steps), tick_every))
        axes.set_xticks(ticks, labels=[str(self.heatmap_steps[i]) for i in ticks], fontsize=7)
        axes.set_xlabel("optimizer step (probe steps only)")
        axes.set_title(f"{metric}: in-distribution score, mean over seed pairs", fontsize=9)
        figure.colorbar(image, ax=axes)
        figure.tight_layout()
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    # ----------------------------------------------------------------- end of training

    def _log_final(self, step: int) -> None:
        import wandb

        if self._last_logged is None:
            log.info("W&B panels: no probe step was logged, so there are no final tables")
            return
        logged = self._last_logged
        shifted = [probe.name for probe in self.callback.probe_sets if probe.name != ID_PROBE]
        columns = ["layer", "depth", "id_score", *[f"drop/{name}" for name in shifted]]
        payload: dict[str, Any] = {STEP_KEY: step}
        for metric in self.metrics:
            data = []
            for depth, layer in enumerate(self.layers):
                drops = [_finite_or_none(logged.get(f"drop/{name}/{layer}/{metric}")) for name in shifted]
                data.append([layer, depth, _finite_or_none(logged.get(f"align/{ID_PROBE}/{layer}/{metric}")),
                             *drops])
            payload[f"{FINAL_TABLE_PREFIX}/{metric}"] = wandb.Table(columns=columns, data=data)
        self.logger.experiment.log(payload)


def _run_name(logger) -> str:
    run = getattr(logger, "_experiment", None)
    return str(getattr(run, "id", None) or getattr(logger, "name", None) or "<not started>")


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _finite_or_none(value: Any) -> float | None:
    # W&B tables are JSON; NaN is not valid JSON, so a missing score is null.
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Return ``value`` with anything that JSON cannot hold turned into its ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    return str(value)


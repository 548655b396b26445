"""Sinks for probe results: a local tidy table and every Lightning logger."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

ALIGNMENT_COLUMNS = ("step", "epoch", "probe", "layer", "depth", "metric", "seed_a", "seed_b", "score")
PROBE_STATS_COLUMNS = ("step", "epoch", "probe", "seed", "accuracy", "frechet_distance")
SHIFT_SUMMARY_COLUMNS = ("step", "probe", "layer", "depth", "metric", "id_score", "score", "drop", "accuracy_drop",
                         "frechet_distance")


class CsvTable:
    """An append-only CSV file, flushed and synced after every ``append``.

    Rows are written as they come, so a crash loses at most the probe step
    being written. An existing file with the same header is extended (a
    resumed run); one with another header raises.
    """

    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as handle:
                header = tuple(next(csv.reader(handle), ()))
            if header != self.columns:
                raise ValueError(f"{self.path} has columns {header}, expected {self.columns}; use a new run directory")
        else:
            with self.path.open("w", newline="") as handle:
                csv.writer(handle).writerow(self.columns)

    def append(self, rows: Iterable[Mapping[str, object]]) -> int:
        """Append rows (mappings keyed by column) and return how many were written."""
        count = 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="raise")
            for row in rows:
                writer.writerow({key: _format(value) for key, value in row.items()})
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        return count

    def max_step(self) -> int:
        """Return the largest ``step`` in the file, or -1 when it has no rows."""
        with self.path.open(newline="") as handle:
            return max((int(row["step"]) for row in csv.DictReader(handle)), default=-1)

    def drop_steps_after(self, step: int) -> int:
        """Remove rows with ``step`` greater than ``step`` (a resume recomputes them); return the count."""
        with self.path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if int(row["step"]) <= step]
        if len(kept) == len(rows):
            return 0
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(temporary, self.path)
        return len(rows) - len(kept)


def _format(value: object) -> object:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def log_to_all(loggers: Sequence, metrics: Mapping[str, float], step: int) -> None:
    """Send one probe step's metrics to every logger in one call each, with an explicit step, and flush.

    A logger that fails (no network, a crashed W&B process) is reported once
    and skipped afterwards, so it never stops training or the local table.
    """
    for logger in loggers:
        if getattr(logger, "_convergence_monitor_failed", False):
            continue
        try:
            logger.log_metrics(dict(metrics), step=step)
            # Flush now, so a crash right after this probe step does not lose it from a buffering logger.
            # In Lightning 2.6, TensorBoardLogger.save() flushes its event file and CSVLogger.save() writes.
            logger.save()
        except Exception as error:  # noqa: BLE001 - any logger failure must not stop training
            logger._convergence_monitor_failed = True
            log.error(
                "logger %s failed at step %d and gets no more alignment metrics (%s: %s); "
                "the local table is still complete",
                type(logger).__name__, step, type(error).__name__, error,
            )

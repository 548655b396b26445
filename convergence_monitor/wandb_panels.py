"""W&B-only objects beside the scalar curves (filled in by the dashboard work)."""

from __future__ import annotations


def panels_for_loggers(loggers, callback, pl_module) -> list:
    """Return one panel writer per W&B logger in ``loggers``."""
    return []

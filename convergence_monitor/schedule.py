"""When to probe: step 0, log-spaced through the first epoch, then a regular interval, then the end."""

from __future__ import annotations

import numpy as np


class ProbeSchedule:
    """The optimizer steps at which the callback measures alignment.

    Step ``s`` means "after ``s`` optimizer updates of each seed"; step 0 is
    before the first update. Most cross-seed alignment forms early, so the
    first epoch gets ``first_epoch_points`` log-spaced steps (fewer only when
    the epoch has fewer steps). After epoch 1 the schedule probes every
    ``interval`` steps (by default twice per epoch), and the callback always
    adds the last step of training.

    Args:
        first_epoch_points: distinct probe steps in (0, steps_per_epoch].
        interval: steps between probes after the first epoch; ``None`` for
            half an epoch.
    """

    def __init__(self, first_epoch_points: int = 16, interval: int | None = None):
        if first_epoch_points < 1:
            raise ValueError(f"first_epoch_points must be at least 1, got {first_epoch_points}")
        if interval is not None and interval < 1:
            raise ValueError(f"interval must be a positive number of steps or None, got {interval}")
        self.first_epoch_points = first_epoch_points
        self.interval = interval

    def steps(self, steps_per_epoch: int, total_steps: int) -> list[int]:
        """Return the sorted probe steps for a run of ``total_steps`` optimizer steps."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        total_steps = max(0, int(total_steps))
        first_epoch = min(steps_per_epoch, total_steps)
        chosen = {0, total_steps}
        chosen.update(self._log_spaced(first_epoch))
        interval = self.interval or max(1, steps_per_epoch // 2)
        chosen.update(range(steps_per_epoch, total_steps + 1, interval))
        return sorted(s for s in chosen if 0 <= s <= total_steps)

    def _log_spaced(self, last: int) -> list[int]:
        if last < 1:
            return []
        target = min(self.first_epoch_points, last)
        # Rounding merges the densest early points, so ask for more until enough distinct steps remain.
        count = target
        while True:
            points = np.unique(np.round(np.geomspace(1, last, count)).astype(int))
            if len(points) >= target or count > 100 * target:
                return points.tolist()
            count += 1

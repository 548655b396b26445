import pytest

from convergence_monitor.schedule import ProbeSchedule


def test_schedule_starts_at_zero_and_ends_at_last_step():
    steps = ProbeSchedule().steps(steps_per_epoch=60, total_steps=180)
    assert steps[0] == 0
    assert steps[-1] == 180


def test_schedule_first_epoch_is_dense_and_log_spaced():
    steps = ProbeSchedule(first_epoch_points=16).steps(steps_per_epoch=60, total_steps=180)
    first_epoch = [s for s in steps if 0 < s <= 60]
    assert len(first_epoch) >= 16
    gaps = [b - a for a, b in zip(first_epoch, first_epoch[1:])]
    assert gaps[0] <= gaps[-1]
    assert first_epoch[:4] == [1, 2, 3, 4]


def test_schedule_short_epoch_probes_every_step():
    steps = ProbeSchedule(first_epoch_points=16).steps(steps_per_epoch=5, total_steps=5)
    assert steps == [0, 1, 2, 3, 4, 5]


def test_schedule_regular_interval_after_epoch_one():
    steps = ProbeSchedule(interval=10).steps(steps_per_epoch=40, total_steps=100)
    later = [s for s in steps if s > 40]
    assert later == [50, 60, 70, 80, 90, 100]


def test_schedule_default_interval_is_half_an_epoch():
    steps = ProbeSchedule().steps(steps_per_epoch=40, total_steps=120)
    assert [s for s in steps if s > 40] == [60, 80, 100, 120]


@pytest.mark.parametrize("kwargs", [{"first_epoch_points": 0}, {"interval": 0}])
def test_schedule_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="must be"):
        ProbeSchedule(**kwargs)

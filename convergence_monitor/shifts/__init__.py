"""Distribution shifts for out-of-distribution probe sets.

- ``corruptions``: graded corruption families (severities 1-5) for digit and
  natural images, a registry ``CORRUPTIONS`` and ``corrupt``.
- ``natural``: real images from another source, such as scikit-learn's UCI
  digits in the MNIST frame.
- ``magnitude``: how large a shift is (Fréchet distance, accuracy drop).
- ``probe_sets``: probe sets built from a datamodule's probe images.
"""

from convergence_monitor.shifts.corruptions import (
    CORRUPTIONS,
    DIGIT_FAMILIES,
    NATURAL_FAMILIES,
    SEVERITIES,
    Corruption,
    corrupt,
    corruption_generator,
    families_for_channels,
    get_corruption,
)
from convergence_monitor.shifts.magnitude import (
    accuracy_drop,
    frechet_distance,
    frechet_distance_gaussians,
    top1_accuracy,
)
from convergence_monitor.shifts.natural import uci_digits_probe
from convergence_monitor.shifts.probe_sets import (
    DEFAULT_DIGIT_BATTERY,
    DEFAULT_NATURAL_BATTERY,
    DEFAULT_SEVERITIES,
    NATURAL_SHIFTS,
    build_shift_probe_sets,
    probe_set_from_images01,
)

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_DIGIT_BATTERY",
    "DEFAULT_NATURAL_BATTERY",
    "DEFAULT_SEVERITIES",
    "DIGIT_FAMILIES",
    "NATURAL_FAMILIES",
    "NATURAL_SHIFTS",
    "SEVERITIES",
    "Corruption",
    "accuracy_drop",
    "build_shift_probe_sets",
    "corrupt",
    "corruption_generator",
    "families_for_channels",
    "frechet_distance",
    "frechet_distance_gaussians",
    "get_corruption",
    "probe_set_from_images01",
    "top1_accuracy",
    "uci_digits_probe",
]

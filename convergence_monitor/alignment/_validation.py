"""Input checks and conversion shared by every alignment metric.

Every public function converts its inputs here, before any arithmetic, so a
bad input fails with a message that states what was expected, what was
found and the offending value.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

# A held-out fold with fewer samples than this cannot give a meaningful
# Pearson correlation (with 2 samples every correlation is +1 or -1).
MIN_SAMPLES_PER_FOLD = 3


class AlignmentInputError(ValueError):
    """Invalid input to an alignment metric.

    The message starts with the caller's context (for example the layer and
    seeds being compared) when one was given.
    """


def with_context(message: str, context: str | None) -> str:
    """Prefix ``message`` with ``context`` when one is given."""
    if context:
        return f"{context}: {message}"
    return message


def fail(message: str, context: str | None) -> AlignmentInputError:
    """Build an :class:`AlignmentInputError` with the context prefixed."""
    return AlignmentInputError(with_context(message, context))


def to_float64(array: Any, name: str, context: str | None = None) -> np.ndarray:
    """Convert a samples × units matrix to a finite float64 numpy array.

    Accepts numpy arrays and torch tensors on any device and of any real
    dtype (float16 and bfloat16 included).
    """
    return to_float_array(array, name, context).astype(np.float64, copy=False)


def to_float_array(array: Any, name: str, context: str | None = None) -> np.ndarray:
    """Check a samples × units matrix and return it as a finite numpy float array.

    float16, float32 and float64 inputs keep their dtype, so a caller can
    convert one block at a time to float64 instead of holding a float64 copy
    of every input. Integers and booleans become float64; torch bfloat16
    and float8 become float32, which represents each of their values
    exactly. Other numpy floats (long double) become float64 before the
    finiteness check, so a value beyond the float64 range is rejected here.
    Torch tensors move to the CPU.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        if array.is_complex():
            raise fail(f"{name} must be real-valued; found a tensor of dtype {array.dtype}", context)
        if array.is_meta:
            raise fail(f"{name} is a meta tensor, which has no data; pass a tensor on a real device", context)
        array = array.detach().cpu()
        if array.is_floating_point() and array.dtype not in (torch.float16, torch.float32, torch.float64):
            # numpy has no bfloat16 or float8; float32 represents each of their values exactly.
            array = array.to(torch.float32)
        array = array.numpy()

    result = np.asarray(array)
    if result.dtype.kind not in "biuf":
        raise fail(f"{name} must be a real numeric array; found dtype {result.dtype}", context)
    if result.dtype not in (np.float16, np.float32, np.float64):
        # An overflow becomes inf, which the finiteness check below reports with its position.
        with np.errstate(over="ignore"):
            result = result.astype(np.float64)

    if result.ndim != 2:
        raise fail(
            f"{name} must be a 2-D array of samples × units; found {result.ndim} dimensions "
            f"with shape {result.shape}",
            context,
        )
    if result.shape[0] == 0 or result.shape[1] == 0:
        raise fail(f"{name} must have at least one sample and one unit; found shape {result.shape}", context)

    finite = np.isfinite(result)
    if not finite.all():
        bad = np.argwhere(~finite)
        row, column = bad[0]
        raise fail(
            f"{name} must contain only finite values; found {len(bad)} NaN or infinite values, "
            f"the first at row {row}, column {column} ({result[row, column]})",
            context,
        )
    return result


def check_same_samples(shapes: dict[str, tuple[int, int]], context: str | None) -> int:
    """Return the common sample count, or raise naming the mismatched inputs."""
    counts = {name: shape[0] for name, shape in shapes.items()}
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise fail(f"every input must have the same number of samples (rows); found {found}", context)
    return next(iter(counts.values()))


def check_fold_settings(n: int, folds: Any, seed: Any, context: str | None) -> None:
    """Check the cross-validation settings against the sample count."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise fail(f"folds must be an integer of at least 2; found {folds!r}", context)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise fail(f"seed must be a non-negative integer; found {seed!r}", context)
    minimum = MIN_SAMPLES_PER_FOLD * int(folds)
    if n < minimum:
        raise fail(
            f"cross-validation with folds={folds} needs at least {MIN_SAMPLES_PER_FOLD} samples per "
            f"held-out fold, so at least {minimum} samples; found {n}. Use more probe samples or "
            f"fewer folds",
            context,
        )


def check_alphas(alphas: Any, context: str | None) -> np.ndarray | None:
    """Return ``alphas`` as a 1-D float64 array of positive values, or None."""
    if alphas is None:
        return None
    try:
        values = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(f"alphas must be a sequence of positive numbers; found {alphas!r}", context) from None
    if values.ndim != 1 or values.size == 0:
        raise fail(f"alphas must be a non-empty 1-D sequence of penalties; found shape {values.shape}", context)
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise fail(f"alphas must be finite and positive; found {values.tolist()}", context)
    return values


def check_symmetric(symmetric: Any, context: str | None) -> bool:
    """Return ``symmetric`` as a bool, and reject anything but True or False, because a string such as "no" is truthy."""
    if not isinstance(symmetric, (bool, np.bool_)):
        raise fail(f"symmetric must be True or False; found {symmetric!r}", context)
    return bool(symmetric)

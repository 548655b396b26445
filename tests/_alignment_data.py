"""Synthetic representations shared by the alignment tests."""

from __future__ import annotations

import numpy as np


def random_orthogonal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Haar-random orthogonal matrix (QR with sign fix), reflections included."""
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    return q * np.sign(np.diag(r))


def low_rank(rng: np.random.Generator, n: int, width: int, rank: int = 5, noise: float = 0.3) -> np.ndarray:
    """Network-like features: a rank-``rank`` signal spread over ``width`` units plus noise."""
    signal = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, width))
    return signal + noise * rng.standard_normal((n, width))


def linear_pair(rng: np.random.Generator, n: int, p: int, q: int, noise: float = 0.5):
    """X and Y = X A + noise."""
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, q)) + noise * rng.standard_normal((n, q))
    return X, Y


def privileged_pair(rng: np.random.Generator, n: int, p: int, noise: float = 0.3):
    """Sparse heavy-tailed axis-aligned units in X, and Y the same units reordered plus noise.

    The units form a privileged basis: one unit of Y matches one unit of X,
    and a rotation of Y spreads each unit over many.
    """
    sources = rng.standard_t(df=3, size=(n, p)) * (rng.random((n, p)) < 0.3)
    X = sources + noise * rng.standard_normal((n, p))
    Y = sources[:, rng.permutation(p)] + noise * rng.standard_normal((n, p))
    return X, Y

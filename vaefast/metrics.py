"""Agreement measures between two runs of a model (no torch): errors, kNN overlap, PSNR."""

from __future__ import annotations

import numpy as np


def max_errors(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max abs error; max abs error relative to the reference's largest magnitude; and
    ``max_scaled``, max abs error over max(1, that magnitude) — absolute for tensors within
    [-1, 1], relative beyond, as float32 rounding grows with the values summed.

    Relative to the tensor's scale rather than per element, so entries near zero
    do not turn rounding into huge ratios.
    """
    diff = np.abs(np.asarray(actual, np.float64) - np.asarray(reference, np.float64))
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    err = float(diff.max()) if diff.size else 0.0
    return {
        "max_abs": err,
        "max_rel": err / scale if scale > 0 else err,
        "max_scaled": err / max(1.0, scale),
    }


def knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k nearest other rows (squared Euclidean, brute force, blocked)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    k = min(k, n - 1)
    sq = (X * X).sum(1)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, 1024):
        block = slice(start, min(start + 1024, n))
        d = sq[block, None] + sq[None, :] - 2.0 * X[block] @ X.T
        d[np.arange(d.shape[0]), np.arange(block.start, block.stop)] = np.inf  # not itself
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        out[block] = part
    return out


def knn_overlap(A: np.ndarray, B: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours in A that are also its k in B."""
    ia, ib = knn_indices(A, k), knn_indices(B, k)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(ia, ib)]
    return float(np.mean(shared) / ia.shape[1])


def psnr(actual: np.ndarray, reference: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, peak]; inf when identical."""
    mse = float(np.mean((np.asarray(actual, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))

"""Input-space affinities P of the exact t-SNE, as scikit-learn computes them.

Squared Euclidean distances (rounded to float32), a per-point binary search for the
precision that meets the perplexity, then P = max((P_cond + P_cond.T) / sum, eps).
P is kept dense (N x N float32, 4 N^2 bytes, its only N x N array) while that fits
``max_dense_bytes`` (default: half of the memory available when it is built); past that
only the per-point precisions and normalizers are kept (O(N)) and P rows are recomputed
exactly, and rounded the same way, inside the gradient kernel.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from vaefast.tsne.backends import DEFAULT, kernels

FALLBACK_DENSE_BYTES = 1 << 30  # where the available memory cannot be read


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def dense_budget() -> int:
    """Bytes a dense P may take: half of the memory available now (1 GiB when unknown)."""
    free = available_bytes()
    return FALLBACK_DENSE_BYTES if free is None else free // 2
P_DTYPE = np.float32


@dataclass
class Affinities:
    """Joint probabilities P, dense or implicit.

    ``P`` is [N, N] (dense) or a [0, 0] placeholder (implicit: rows are recomputed from
    ``X``, ``beta``, ``sum_p`` and ``total``).
    """

    P: np.ndarray
    X: np.ndarray
    beta: np.ndarray
    sum_p: np.ndarray
    total: float
    backend: str = DEFAULT

    @property
    def dense(self) -> bool:
        return self.P.shape[0] == self.X.shape[0]

    def kernel_args(self) -> tuple:
        return self.P, self.X, self.beta, self.sum_p, self.total

    def to_dense(self) -> np.ndarray:
        """The full [N, N] P (for tests and small N)."""
        if self.dense:
            return self.P
        n = self.X.shape[0]
        out = np.empty((n, n), P_DTYPE)
        kernels(self.backend).joint_matrix(self.X, self.beta, self.sum_p, self.total, out)
        return out


def _report(beta: np.ndarray, seconds: float, verbose: int) -> None:
    """scikit-learn's verbose lines for P."""
    if verbose:
        print("[t-SNE] Mean sigma: %f" % np.mean(math.sqrt(len(beta) / np.sum(beta))))
    if verbose >= 2:
        print("[t-SNE] Computed conditional probabilities in {:.3f}s".format(seconds))


def joint_probabilities(X: np.ndarray, perplexity: float, max_dense_bytes: int | None = None,
                        backend: str = DEFAULT, verbose: int = 0) -> Affinities:
    """P of scikit-learn's exact t-SNE for rows of X (float32 or float64), euclidean.

    The per-point precisions come first (O(N) memory); then, when ``4 N^2`` bytes fit
    ``max_dense_bytes`` (default: half the available memory), P is filled row by row as
    float32, the only N x N array (the rows the implicit path recomputes, bit for bit).
    """
    t0 = time.perf_counter()
    k = kernels(backend)
    X = np.ascontiguousarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n = X.shape[0]
    budget = dense_budget() if max_dense_bytes is None else max_dense_bytes
    beta, sum_p, row_total = np.empty(n), np.empty(n), np.empty(n)
    # scikit-learn takes the log of the perplexity as a C float
    log_perplexity = math.log(float(np.float32(perplexity)))
    k.conditional_probabilities(X, log_perplexity, beta, sum_p, row_total)
    total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
    P = np.empty((n, n) if 4 * n * n <= budget else (0, 0), P_DTYPE)
    if P.shape[0]:
        k.joint_matrix(X, beta, sum_p, total, P)
    _report(beta, time.perf_counter() - t0, verbose)
    return Affinities(P, X, beta, sum_p, total, backend)


def joint_probabilities_from_distances(distances: np.ndarray, perplexity: float,
                                       backend: str = DEFAULT, verbose: int = 0) -> Affinities:
    """P from given squared distances [N, N] (any metric, or precomputed), dense, with
    scikit-learn's float32 rounding and binary search."""
    t0 = time.perf_counter()
    k = kernels(backend)
    D = np.ascontiguousarray(distances, dtype=np.float32)
    n = D.shape[0]
    C = np.empty((n, n), np.float64)
    beta, sum_p, row_total = np.empty(n), np.empty(n), np.empty(n)
    k.conditional_probabilities_from_distances(D, math.log(float(np.float32(perplexity))), C,
                                               beta, sum_p, row_total)
    total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
    P = np.empty((n, n), P_DTYPE)
    k.symmetrize(C, total, P)
    _report(beta, time.perf_counter() - t0, verbose)
    return Affinities(P, np.empty((n, 0)), beta, sum_p, total, backend)

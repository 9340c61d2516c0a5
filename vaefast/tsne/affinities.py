"""Input-space affinities P of the exact t-SNE, as scikit-learn computes them.

Squared Euclidean distances (rounded to float32), a per-point binary search for the
precision that meets the perplexity, then P = max((P_cond + P_cond.T) / sum, eps).
P is kept as its packed upper triangle (float32, 2 N^2 bytes, its only N^2 array) while
that fits ``max_dense_bytes`` (default: half of the memory available when it is built);
past that only the per-point precisions and normalizers are kept (O(N)) and P's pairs
are recomputed, to the same bits, inside the gradient kernel.
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
    """Joint probabilities P, stored (packed) or implicit.

    ``P`` is the packed upper triangle [N (N - 1) / 2] (pair (i, j > i) at
    ``packed_start(i, N) + j - i - 1``) or empty (implicit: pairs are recomputed from
    ``XT`` = X.T [D, N] float64, ``beta``, ``sum_p`` and ``total``).
    """

    P: np.ndarray
    XT: np.ndarray
    beta: np.ndarray
    sum_p: np.ndarray
    total: float
    backend: str = DEFAULT

    @property
    def n(self) -> int:
        return self.beta.shape[0]

    @property
    def dense(self) -> bool:
        """Whether P is stored (else recomputed in every gradient evaluation)."""
        return self.P.size > 0 or self.n < 2

    def kernel_args(self) -> tuple:
        return self.P, self.XT, self.beta, self.sum_p, self.total

    def packed(self) -> np.ndarray:
        """The packed upper triangle of P (computed when implicit)."""
        if self.dense:
            return self.P
        k = kernels(self.backend)
        out = np.empty(k.packed_size(self.n), P_DTYPE)
        k.joint_packed(self.XT, self.beta, self.sum_p, self.total, out)
        return out

    def to_dense(self) -> np.ndarray:
        """The full symmetric [N, N] P, zero diagonal (for tests and small N)."""
        out = np.zeros((self.n, self.n), P_DTYPE)
        upper = np.triu_indices(self.n, 1)
        out[upper] = self.packed()
        out.T[upper] = out[upper]
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

    The per-point precisions come first (O(N) memory); then, when the packed triangle's
    ``2 N^2`` bytes fit ``max_dense_bytes`` (default: half the available memory), P is
    stored as float32 (the pairs the implicit path recomputes, bit for bit).
    """
    t0 = time.perf_counter()
    k = kernels(backend)
    XT = np.ascontiguousarray(np.asarray(X).T, dtype=np.float64)  # exact for float32 X
    n = XT.shape[1]
    budget = dense_budget() if max_dense_bytes is None else max_dense_bytes
    beta, sum_p, row_total = np.empty(n), np.empty(n), np.empty(n)
    # scikit-learn takes the log of the perplexity as a C float
    log_perplexity = math.log(float(np.float32(perplexity)))
    k.conditional_probabilities(XT, log_perplexity, beta, sum_p, row_total)
    total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
    size = k.packed_size(n)
    P = np.empty(size if 4 * size <= budget else 0, P_DTYPE)
    if P.size:
        k.joint_packed(XT, beta, sum_p, total, P)
    _report(beta, time.perf_counter() - t0, verbose)
    return Affinities(P, XT, beta, sum_p, total, backend)


def joint_probabilities_from_distances(distances: np.ndarray, perplexity: float,
                                       backend: str = DEFAULT, verbose: int = 0) -> Affinities:
    """P from given squared distances [N, N] (any metric, or precomputed), stored, with
    scikit-learn's float32 rounding and binary search."""
    t0 = time.perf_counter()
    k = kernels(backend)
    D = np.ascontiguousarray(distances, dtype=np.float32)
    n = D.shape[0]
    beta, sum_p, row_total = np.empty(n), np.empty(n), np.empty(n)
    k.conditional_probabilities_from_distances(D, math.log(float(np.float32(perplexity))),
                                               beta, sum_p, row_total)
    total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
    P = np.empty(k.packed_size(n), P_DTYPE)
    k.joint_packed_from_distances(D, beta, sum_p, total, P)
    _report(beta, time.perf_counter() - t0, verbose)
    return Affinities(P, np.empty((0, n)), beta, sum_p, total, backend)

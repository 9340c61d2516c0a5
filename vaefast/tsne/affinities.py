"""Input-space affinities P of the exact t-SNE, as scikit-learn computes them.

Squared Euclidean distances (rounded to float32), a per-point binary search for the
precision that meets the perplexity, then P = max((P_cond + P_cond.T) / sum, eps).

Distances of inputs with many features (``GEMM_MIN_FEATURES``) come as scikit-learn's
``euclidean_distances`` computes them: |x|^2 + |y|^2 - 2 x.y in float64 through one BLAS
GEMM per block of rows, clipped at 0, rounded to float32, the diagonal exactly 0 (a
stored P computes each pair once, as the packed triangle). Fewer features keep the
direct sum over features, which is faster there and which the recomputed (large-N)
gradient shares bit for bit.
P is kept in the first of three forms that fits ``max_dense_bytes`` (default: half of the
memory available when it is built), all giving the gradient kernel the same bits:

- dense: its packed upper triangle (float32, 2 N^2 bytes, its only N^2 array), while
  that is at most ``SPARSE_FROM_BYTES`` (N up to about 8,000) on AVX-512 CPUs;
- sparse: a bit a pair (set where p is above the floor eps) and the values of the set
  ones (4 bytes each), every other pair being eps. On VAE latent means 43 % of the pairs
  are kept at N = 20,000 and 17 % at 100,000: 0.37 and 4.0 GB instead of 0.8 and 20;
- recomputed: only the per-point precisions and normalizers (O(N)), P's pairs
  recomputed inside the gradient kernel (20-D distances and two exponentials a pair:
  about 15x slower per iteration than stored).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from vaefast.tsne.backends import DEFAULT, kernels

FALLBACK_DENSE_BYTES = 1 << 30  # where the available memory cannot be read
# A packed P above this streams from memory at every iteration; sparse P moves less than
# half its bytes there and, where AVX-512 expands its values in one instruction, the
# gradient runs faster from it (measured crossover between N = 5,000 and 10,000 on VAE
# means: RESULTS.md), so there it is kept sparse by default. With AVX2 the expansion is
# sixteen scalar steps and dense stays faster (20,000 points: 44 against 51 ms).
SPARSE_FROM_BYTES = 128 << 20


def sparse_from_bytes() -> int | None:
    """``SPARSE_FROM_BYTES`` on CPUs that run the AVX-512 kernels, else None (dense while
    it fits the budget)."""
    from vaefast.tsne.precompiled import host_level

    return SPARSE_FROM_BYTES if host_level() == "x86-64-v4" else None


GEMM_MIN_FEATURES = 96  # from this many features, distances go through BLAS (RESULTS.md)
GEMM_ROWS = 512  # rows per GEMM block (a [512, N] float64 block: 20 MB at N = 5,000)


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


def _empty(dtype) -> np.ndarray:
    return np.empty(0, dtype)


@dataclass
class Affinities:
    """Joint probabilities P: dense, sparse or recomputed (see the module).

    ``P`` is the packed upper triangle [N (N - 1) / 2] (pair (i, j > i) at
    ``packed_start(i, N) + j - i - 1``) or empty. ``starts`` [2, N + 1], ``mask`` and
    ``values`` hold the pairs above eps (``joint_sparse``), or are empty. With neither,
    pairs are recomputed from ``XT`` = X.T [D, N] float64, ``beta``, ``sum_p`` and
    ``total``.
    """

    P: np.ndarray
    XT: np.ndarray
    beta: np.ndarray
    sum_p: np.ndarray
    total: float
    backend: str = DEFAULT
    starts: np.ndarray = field(default_factory=lambda: np.empty((2, 0), np.int64))
    mask: np.ndarray = field(default_factory=lambda: _empty(np.uint8))
    values: np.ndarray = field(default_factory=lambda: _empty(P_DTYPE))

    @property
    def n(self) -> int:
        return self.beta.shape[0]

    @property
    def dense(self) -> bool:
        """Whether P is stored as its packed triangle."""
        return self.P.size > 0 or self.n < 2

    @property
    def storage(self) -> str:
        """How P is kept: ``dense``, ``sparse`` or ``recomputed``."""
        return "dense" if self.dense else "sparse" if self.starts.size else "recomputed"

    @property
    def nbytes(self) -> int:
        """Bytes of P as kept (0 when recomputed)."""
        return self.P.nbytes + self.starts.nbytes + self.mask.nbytes + self.values.nbytes

    def kernel_args(self) -> tuple:
        return (
            self.P,
            self.starts,
            self.mask,
            self.values,
            self.XT,
            self.beta,
            self.sum_p,
            self.total,
        )

    def packed(self) -> np.ndarray:
        """The packed upper triangle of P (built when sparse or recomputed)."""
        if self.dense:
            return self.P
        k = kernels(self.backend)
        out = np.empty(k.packed_size(self.n), P_DTYPE)
        if self.storage == "sparse":
            out[:] = P_DTYPE(k.MACHINE_EPSILON)
            rows = np.repeat(np.arange(self.n), np.arange(self.n - 1, -1, -1))
            column = np.arange(out.size) - (rows * self.n - rows * (rows + 1) // 2)
            bits = np.unpackbits(self.mask, bitorder="little").astype(bool)
            out[bits[8 * self.starts[1, rows] + column]] = self.values
            return out
        k.joint_packed(self.XT, self.beta, self.sum_p, self.total, out)
        return out

    def to_dense(self) -> np.ndarray:
        """The full symmetric [N, N] P, zero diagonal (for tests and small N)."""
        out = np.zeros((self.n, self.n), P_DTYPE)
        upper = np.triu_indices(self.n, 1)
        out[upper] = self.packed()
        out.T[upper] = out[upper]
        return out


def log_perplexity(perplexity: float) -> float:
    """log of the perplexity as scikit-learn's binary search takes it (a C float)."""
    return math.log(float(np.float32(perplexity)))


def _report(beta: np.ndarray, seconds: float, verbose: int) -> None:
    """scikit-learn's verbose lines for P."""
    if verbose:
        print("[t-SNE] Mean sigma: %f" % np.mean(math.sqrt(len(beta) / np.sum(beta))))
    if verbose >= 2:
        print("[t-SNE] Computed conditional probabilities in {:.3f}s".format(seconds))


def joint_probabilities(
    X: np.ndarray,
    perplexity: float,
    max_dense_bytes: int | None = None,
    backend: str = DEFAULT,
    verbose: int = 0,
    n_jobs: int | None = None,
    storage: str | None = None,
) -> Affinities:
    """P of scikit-learn's exact t-SNE for rows of X (float32 or float64), euclidean.

    The per-point precisions come first (O(N) memory); then P is kept dense when the
    packed triangle's ``2 N^2`` bytes fit ``max_dense_bytes`` (default: half the
    available memory) and, on AVX-512 CPUs, ``SPARSE_FROM_BYTES``, else sparse when its
    pairs above eps fit (counted in one pass over the pairs), else recomputed.
    ``storage`` forces one of ``STORAGES``. ``n_jobs``: BLAS threads for the distance
    GEMMs (default: numpy's).
    """
    t0 = time.perf_counter()
    k = kernels(backend)
    X = np.asarray(X)
    n = X.shape[0]
    if storage not in (None, *STORAGES):
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    budget = dense_budget() if max_dense_bytes is None else max_dense_bytes
    beta, sum_p, row_total = np.empty(n), np.empty(n), np.empty(n)
    log_p = log_perplexity(perplexity)
    size = k.packed_size(n)
    cap = sparse_from_bytes()
    dense = storage == "dense" or (
        storage is None and 4 * size <= (budget if cap is None else min(budget, cap))
    )
    P = np.empty(size if dense else 0, P_DTYPE)
    # X.T, float64 (exact for float32 X): what the recomputed pairs are summed from
    XT = (
        np.ascontiguousarray(X.T, dtype=np.float64)
        if not P.size or X.shape[1] < GEMM_MIN_FEATURES
        else np.empty((0, n))
    )
    if X.shape[1] >= GEMM_MIN_FEATURES and n > 1:
        _gemm_affinities(
            np.ascontiguousarray(X, dtype=np.float64), log_p, beta, sum_p, row_total, P, k, n_jobs
        )
        total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
        if P.size:
            k.joint_packed_in_place(P, beta, sum_p, total)
    else:
        k.conditional_probabilities(XT, log_p, beta, sum_p, row_total)
        total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
        if P.size:
            k.joint_packed(XT, beta, sum_p, total, P)
    sparse = {}
    if (
        not dense
        and n > 1
        and (storage == "sparse" or (storage is None and budget > n * (n - 1) // 16))
    ):
        sparse = _sparse_pairs(XT, beta, sum_p, total, k, None if storage else budget)
    _report(beta, time.perf_counter() - t0, verbose)
    return Affinities(P, XT, beta, sum_p, total, backend, **sparse)


STORAGES = ("dense", "sparse", "recomputed")


def _sparse_pairs(XT, beta, sum_p, total, k, budget: int | None) -> dict:
    """The pairs above eps (``Affinities`` fields), or {} when they would take more than
    ``budget`` bytes (None: any)."""
    n = beta.shape[0]
    counts = np.zeros(n, np.int64)
    k.joint_sparse_counts(XT, beta, sum_p, total, counts)
    starts = np.zeros((2, n + 1), np.int64)
    np.cumsum(counts, out=starts[0, 1:])
    np.cumsum((np.arange(n - 1, -1, -1) + 7) // 8, out=starts[1, 1:])  # each row's bytes
    nnz, mask_bytes = int(starts[0, n]), int(starts[1, n]) + 8  # 8: bits16's reach
    if budget is not None and starts.nbytes + mask_bytes + 4 * nnz > budget:
        return {}
    mask, values = np.zeros(mask_bytes, np.uint8), np.empty(nnz, P_DTYPE)
    k.joint_sparse(XT, beta, sum_p, total, starts, mask, values)
    return {"starts": starts, "mask": mask, "values": values}


def squared_distances(
    A: np.ndarray, sq_a: np.ndarray, B: np.ndarray, sq_b: np.ndarray, diagonal: int | None = None
) -> np.ndarray:
    """Squared distances [len(A), len(B)] as scikit-learn's ``euclidean_distances``
    computes them: ``sq_a_i + sq_b_j - 2 a_i . b_j`` in float64 (one BLAS GEMM), clipped
    at 0, rounded to float32. A, B: float64 rows; sq_a, sq_b: their squared norms
    (``squared_norms``). ``diagonal``: where A's row r is B's row r + diagonal (the same
    point), the distance is exactly 0."""
    d = A @ B.T
    d *= -2.0
    d += sq_a[:, None]
    d += sq_b[None, :]
    np.maximum(d, 0.0, out=d)
    if diagonal is not None:
        r = np.arange(max(0, -diagonal), min(len(A), len(B) - diagonal))
        d[r, r + diagonal] = 0.0
    return d.astype(np.float32)


def squared_norms(X64: np.ndarray) -> np.ndarray:
    """Squared row norms in float64, as scikit-learn's ``row_norms(squared=True)``."""
    return np.einsum("ij,ij->i", X64, X64)


def _gemm_affinities(X64, log_p, beta, sum_p, row_total, P, k, n_jobs) -> None:
    """Precisions (and, when P is stored, the packed squared distances in P) from GEMM
    blocks. Stored: each pair once (blocks right of the diagonal), the full rows read
    back from the triangle for the binary search; implicit: full rows per block."""
    from threadpoolctl import threadpool_limits

    n = X64.shape[0]
    sq = squared_norms(X64)
    blocks = [(i0, min(i0 + GEMM_ROWS, n)) for i0 in range(0, n, GEMM_ROWS)]
    with threadpool_limits(limits=n_jobs, user_api="blas"):
        if not P.size:
            for i0, i1 in blocks:
                rows = squared_distances(X64[i0:i1], sq[i0:i1], X64, sq, diagonal=i0)
                k.conditional_rows(rows, i0, log_p, beta, sum_p, row_total)
            return
        for i0, i1 in blocks:
            d = squared_distances(X64[i0:i1], sq[i0:i1], X64[i0:], sq[i0:], diagonal=0)
            for r in range(i1 - i0):
                start = k.packed_start(i0 + r, n)
                P[start : start + n - i0 - r - 1] = d[r, r + 1 :]
    rows = np.empty((GEMM_ROWS, n), np.float32)
    for i0, i1 in blocks:
        k.rows_from_packed(P, i0, rows[: i1 - i0])
        k.conditional_rows(rows[: i1 - i0], i0, log_p, beta, sum_p, row_total)


def joint_probabilities_from_distances(
    distances: np.ndarray, perplexity: float, backend: str = DEFAULT, verbose: int = 0
) -> Affinities:
    """P from given squared distances [N, N] (any metric, or precomputed), stored, with
    scikit-learn's float32 rounding and binary search."""
    t0 = time.perf_counter()
    k = kernels(backend)
    D = np.ascontiguousarray(distances, dtype=np.float32)
    n = D.shape[0]
    beta, sum_p, row_total = np.empty(n), np.empty(n), np.empty(n)
    k.conditional_rows(D, 0, log_perplexity(perplexity), beta, sum_p, row_total)
    total = max(2.0 * float(np.sum(row_total)), k.MACHINE_EPSILON)
    P = np.empty(k.packed_size(n), P_DTYPE)
    k.joint_packed_from_distances(D, beta, sum_p, total, P)
    _report(beta, time.perf_counter() - t0, verbose)
    return Affinities(P, np.empty((0, n)), beta, sum_p, total, backend)

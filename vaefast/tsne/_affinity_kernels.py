"""Numba kernels of the exact t-SNE's affinities (``vaefast.tsne.affinities``): squared
distances, the binary search of each row's precision for the perplexity, the conditional
and joint probabilities, and the constant parts of the KL (sum p, sum p log p).

Determinism: every parallel loop runs over a fixed partition of the rows (never the
thread count in use) and each part writes only its own outputs; parts are combined in a
fixed order, so results are bit-identical for any ``n_jobs``. X comes as XT [D, N]
float64. P is packed: the upper triangle, row after row (``packed_start``), float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from vaefast.tsne._simd import LANES, bits16, expand, popcount, splat, store, store_first
from vaefast.tsne._vecmath import (
    EXP_COARSE_ERROR,
    exp_nonpositive,
    exp_nonpositive_coarse,
    log_positive,
)


# scikit-learn's constants (sklearn/manifold/_utils.pyx and _t_sne.py), kept bit-exact:
# its C floats are float32 values promoted to double.
PERPLEXITY_TOLERANCE = float(np.float32(1e-5))
EPSILON_DBL = float(np.float32(1e-8))
MACHINE_EPSILON = float(np.finfo(np.float64).eps)
N_STEPS = 100

# Reassociation lets LLVM vectorize the pair sums; ``error_model="numpy"`` drops the
# zero-division branch that blocks vectorization; unsigned loop indices drop Numba's
# negative-index wraparound, without which loops that store do not vectorize.
FAST = {"reassoc", "contract", "nsz", "arcp"}
U64 = np.uint64
DIST_BLOCK = 256  # columns per block of the distance loop (its float64 sums stay in L1)
ROW_CHUNK = 2048  # pairs summed in float32 before a float64 add (one chunk, so one scalar
# remainder loop, per row up to N = 2,048; the gradient stays within 2.2e-7 of float64)
FLUSH_ROWS = 128  # rows whose float32 column terms are summed before a float64 add
# (gradient within 1.6e-7 of float64, N=4,000: as at 32, 9% faster per iteration)
BUILD_PARTS = 64  # interleaved row sets of the affinity kernels


def units(n: int) -> int:
    """Fixed number of row sets of the gradient kernel: at least the most threads Numba
    can run on this machine (so each has work), never the thread count in use (so
    results do not depend on ``n_jobs``); a power of two, at least 4, at most 8 below
    N = 16,384 and 32 above. Each set has column buffers of 48 N bytes that every
    iteration writes and sums: on 2 cores 4 sets run digits' iterations 8% faster than 8,
    and 32 sets cost 1.22x at N = 2,000 and 1.16x at 5,000 against 8."""
    import numba

    u = 4
    while u < numba.config.NUMBA_NUM_THREADS:
        u *= 2
    return min(u, 8 if n < 16384 else 32)


def packed_size(n: int) -> int:
    """Entries of the packed upper triangle of an N x N matrix."""
    return n * (n - 1) // 2


@njit(cache=True, inline="always")
def packed_start(i, n):
    """Where row i's pairs (i, i+1), (i, i+2), ... (i, n-1) start in packed P."""
    return i * n - (i * (i + 1)) // 2


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _sq_distances(x, XT, start, out, acc):
    """out[j] = |x - X_j|^2 for j in [start, N), summed in float64 over the features in
    order and rounded to float32 as scikit-learn rounds them. XT: [D, N] float64; acc:
    float64 scratch of DIST_BLOCK. Every caller gets the same bits for a pair."""
    d, n = XT.shape
    for b in range(start, n, DIST_BLOCK):
        m = U64(min(b + DIST_BLOCK, n) - b)
        ub = U64(b)
        for t in range(m):
            acc[t] = 0.0
        for k in range(d):
            xk = x[k]
            col = XT[k]
            for t in range(m):
                diff = xk - col[ub + t]
                acc[t] += diff * diff
        for t in range(m):
            out[ub + t] = np.float32(acc[t])


@njit(cache=True, inline="always")
def _point(XT, i):
    """Row i of X (column i of XT) as a contiguous float64 array."""
    x = np.empty(XT.shape[0])
    for k in range(XT.shape[0]):
        x[k] = XT[k, i]
    return x


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _exp_sums(dist, skip, beta, coarse=False):
    """(sum of e_j, sum of d_j e_j) with e_j = exp(-beta d_j), leaving out j == skip.
    ``coarse``: with ``exp_nonpositive_coarse``, each sum (of positive terms) within
    EXP_COARSE_ERROR (relative) of the exact one."""
    n = dist.shape[0]
    sk = U64(skip) if skip >= 0 else U64(n)
    s = 0.0
    m = 0.0
    for j in range(U64(n)):
        d = np.float64(dist[j])
        e = exp_nonpositive_coarse(-d * beta) if coarse else exp_nonpositive(-d * beta)
        e = 0.0 if j == sk else e
        s += e
        m += d * e
    return s, m


@njit(cache=True)
def _entropy_diff(sum_pi, sum_d, beta, log_perplexity):
    """scikit-learn's entropy of a row minus the target, from its two sums."""
    if sum_pi == 0.0:
        sum_pi = EPSILON_DBL
    return math.log(sum_pi) + beta * (sum_d / sum_pi) - log_perplexity


@njit(cache=True)
def _search_beta(dist, skip, log_perplexity):
    """scikit-learn's binary search for one row's precision beta, step for step; returns
    the beta that produces the row (when 100 steps do not converge, scikit-learn's P
    also comes from the last beta evaluated).

    Each step first takes the sums with the coarse exp (half the work) and bounds the
    entropy's error from them (relative error e in both sums: at most e (1 + 2 b M / S));
    only where that error could change the step's decision (converged, or which way beta
    moves) are the sums taken again exactly. The decisions, so the betas, are those of
    the exact sums."""
    beta_min = -np.inf
    beta_max = np.inf
    beta = 1.0
    used = beta
    for _ in range(N_STEPS):
        used = beta
        sum_pi, sum_d = _exp_sums(dist, skip, beta, True)
        exact = sum_pi == 0.0  # all terms underflow: scikit-learn's EPSILON_DBL rule
        if not exact:
            entropy_diff = _entropy_diff(sum_pi, sum_d, beta, log_perplexity)
            bound = EXP_COARSE_ERROR * (1.0 + 2.0 * math.fabs(beta * sum_d / sum_pi)) + 1e-12
            gap = math.fabs(entropy_diff)
            exact = gap <= bound or math.fabs(gap - PERPLEXITY_TOLERANCE) <= bound
        if exact:
            sum_pi, sum_d = _exp_sums(dist, skip, beta)
            entropy_diff = _entropy_diff(sum_pi, sum_d, beta, log_perplexity)
        if math.fabs(entropy_diff) <= PERPLEXITY_TOLERANCE:
            break
        if entropy_diff > 0.0:
            beta_min = beta
            if beta_max == np.inf:
                beta *= 2.0
            else:
                beta = (beta + beta_max) / 2.0
        else:
            beta_max = beta
            if beta_min == -np.inf:
                beta /= 2.0
            else:
                beta = (beta + beta_min) / 2.0
    return used


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _row_probabilities(dist, skip, log_perplexity, out):
    """One row of scikit-learn's conditional P: beta by ``_search_beta``, then
    out[j] = exp(-beta d_j) / sum_pi (0 at j == skip); returns (beta, sum_pi, the
    row's total)."""
    beta = _search_beta(dist, skip, log_perplexity)
    n = dist.shape[0]
    sk = U64(skip) if skip >= 0 else U64(n)
    sum_pi = 0.0
    for j in range(U64(n)):
        e = exp_nonpositive(-np.float64(dist[j]) * beta)
        e = 0.0 if j == sk else e
        out[j] = e
        sum_pi += e
    if sum_pi == 0.0:
        sum_pi = EPSILON_DBL
    total = 0.0
    for j in range(U64(n)):
        p = out[j] / sum_pi
        out[j] = p
        total += p
    return beta, sum_pi, total


@njit(parallel=True, cache=True)
def conditional_probabilities(XT, log_perplexity, beta, sum_p, row_total):
    """Per-point precision beta, normalizer and total of the conditional P, from X given
    as XT [D, N] float64 (O(N) memory: the rows themselves are not kept)."""
    n = XT.shape[1]
    for i in prange(n):
        dist = np.empty(n, np.float32)
        _sq_distances(_point(XT, i), XT, 0, dist, np.empty(DIST_BLOCK))
        beta[i], sum_p[i], row_total[i] = _row_probabilities(dist, i, log_perplexity, np.empty(n))


@njit(parallel=True, cache=True)
def conditional_rows(D, first, log_perplexity, beta, sum_p, row_total):
    """``conditional_probabilities`` of rows first .. first + len(D) from their squared
    distances D [rows, N] (float32, as scikit-learn rounds them; row r skips column
    first + r)."""
    n = D.shape[1]
    for r in prange(D.shape[0]):
        i = first + r
        beta[i], sum_p[i], row_total[i] = _row_probabilities(D[r], i, log_perplexity, np.empty(n))


@njit(parallel=True, cache=True)
def rows_from_packed(packed, first, out):
    """Full rows first .. first + len(out) of a symmetric matrix with a zero diagonal,
    from its packed upper triangle (float32)."""
    rows, n = out.shape
    for part in prange(BUILD_PARTS):
        for j in range(part, n, BUILD_PARTS):
            start_j = packed_start(j, n)
            for r in range(rows):
                i = first + r
                if j > i:
                    out[r, j] = packed[packed_start(i, n) + j - i - 1]
                elif j < i:
                    out[r, j] = packed[start_j + i - j - 1]
                else:
                    out[r, j] = 0.0


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def joint_packed_in_place(P, beta, sum_p, total):
    """Packed squared distances (float32) -> the packed joint P, in place:
    max((p_j|i + p_i|j) / total, eps), as ``_joint_from`` computes each pair."""
    n = beta.shape[0]
    for part in prange(BUILD_PARTS):
        for i in range(part, n - 1, BUILD_PARTS):
            start = packed_start(i, n)
            bi = beta[i]
            si = sum_p[i]
            for j in range(U64(i + 1), U64(n)):
                k = start + j - U64(i + 1)
                d = -np.float64(P[k])
                pij = exp_nonpositive(d * bi) / si
                pji = exp_nonpositive(d * beta[j]) / sum_p[j]
                P[k] = np.float32(max((pij + pji) / total, MACHINE_EPSILON))


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _joint_from(dist_ij, dist_ji, i, beta, sum_p, total, out):
    """out[j - i - 1] = max((p_j|i + p_i|j) / total, eps) as float32 for j > i, from the
    squared distances i -> j and j -> i (both indexed by j)."""
    bi = beta[i]
    si = sum_p[i]
    first = U64(i + 1)
    for j in range(first, U64(beta.shape[0])):
        pij = exp_nonpositive(-np.float64(dist_ij[j]) * bi) / si
        pji = exp_nonpositive(-np.float64(dist_ji[j]) * beta[j]) / sum_p[j]
        out[j - first] = np.float32(max((pij + pji) / total, MACHINE_EPSILON))


@njit(cache=True)
def _joint_row(XT, i, beta, sum_p, total, dist, acc, out):
    """Row i's pairs (i, j > i) of the joint P into out[j - i - 1]: the same bits wherever
    it is called (the packed build, the gradient's on-the-fly pairs)."""
    _sq_distances(_point(XT, i), XT, i + 1, dist, acc)
    _joint_from(dist, dist, i, beta, sum_p, total, out)


@njit(parallel=True, cache=True)
def joint_packed(XT, beta, sum_p, total, P):
    """The joint P's upper triangle, row after row, into P [N (N - 1) / 2] float32: the
    dense P in half the memory of a square one."""
    n = XT.shape[1]
    for part in prange(BUILD_PARTS):
        dist = np.empty(n, np.float32)
        acc = np.empty(DIST_BLOCK)
        for i in range(part, n - 1, BUILD_PARTS):
            start = packed_start(i, n)
            _joint_row(XT, i, beta, sum_p, total, dist, acc, P[start : start + n - i - 1])


@njit(parallel=True, cache=True)
def joint_sparse_counts(XT, beta, sum_p, total, counts):
    """counts[i] = how many of row i's pairs (i, j > i) of the joint P lie above its
    floor eps: the entries ``joint_sparse`` keeps (counts[N - 1] is left as given)."""
    n = XT.shape[1]
    floor = np.float32(MACHINE_EPSILON)
    for part in prange(BUILD_PARTS):
        dist = np.empty(n, np.float32)
        acc = np.empty(DIST_BLOCK)
        row = np.empty(n, np.float32)
        for i in range(part, n - 1, BUILD_PARTS):
            out = row[: n - i - 1]
            _joint_row(XT, i, beta, sum_p, total, dist, acc, out)
            c = 0
            for t in range(U64(out.shape[0])):
                c += out[t] > floor
            counts[i] = c


@njit(parallel=True, cache=True)
def joint_sparse(XT, beta, sum_p, total, starts, mask, values):
    """The joint P's pairs (i, j > i) above its floor eps, row after row: row i's bits
    (pair (i, j) at bit j - i - 1) from byte starts[1, i] of mask, set where a pair is
    kept, and its kept p (columns ascending; float32, the bits packed P holds) from
    values[starts[0, i]] on. Every other pair is eps: ``_piece`` rebuilds a row."""
    n = XT.shape[1]
    floor = np.float32(MACHINE_EPSILON)
    for part in prange(BUILD_PARTS):
        dist = np.empty(n, np.float32)
        acc = np.empty(DIST_BLOCK)
        row = np.empty(n, np.float32)
        for i in range(part, n - 1, BUILD_PARTS):
            out = row[: n - i - 1]
            _joint_row(XT, i, beta, sum_p, total, dist, acc, out)
            k = starts[0, i]
            byte = starts[1, i]
            for t0 in range(0, out.shape[0], 8):
                bits = 0
                for t in range(t0, min(t0 + 8, out.shape[0])):
                    if out[t] > floor:
                        bits |= 1 << (t - t0)
                        values[k] = out[t]
                        k += 1
                mask[byte] = bits
                byte += 1


@njit(parallel=True, cache=True)
def joint_packed_from_distances(D, beta, sum_p, total, P):
    """``joint_packed`` from given squared distances D [N, N] (float32)."""
    n = D.shape[0]
    for part in prange(BUILD_PARTS):
        column = np.empty(n, np.float32)
        for i in range(part, n - 1, BUILD_PARTS):
            for j in range(i + 1, n):
                column[j] = D[j, i]
            start = packed_start(i, n)
            _joint_from(D[i], column, i, beta, sum_p, total, P[start : start + n - i - 1])


@njit(cache=True, inline="always")
def _segment(mask, values, k, bit, i, lo, hi, out):
    """Row i's p over the columns lo <= j < hi into out[j - i - 1], from its sparse pairs
    (``joint_sparse``; its bits from bit index ``bit`` of mask): eps, or where the bit is
    set the next kept p from values[k] on, 16 columns a step (``_simd.expand``); returns
    the index of the value after the last one used."""
    eps = splat(MACHINE_EPSILON)
    step = U64(LANES)
    t = U64(lo - i - 1)
    end = U64(hi - i - 1)
    while t + step <= end:
        m = bits16(mask, bit + t)
        store(out, t, expand(values, k, m, eps))
        k += popcount(m)
        t += step
    if t < end:
        m = bits16(mask, bit + t) & ((U64(1) << (end - t)) - U64(1))
        store_first(out, t, end - t, expand(values, k, m, eps))
        k += popcount(m)
    return k


@njit(cache=True, inline="always")
def _piece(P, starts, mask, values, XT, beta, sum_p, total, i, dist, acc, scratch):
    """Row i's pairs (i, j > i) of P, indexed j - i - 1: a view of packed P, or built into
    scratch from the sparse pairs (eps, then the kept ones), or recomputed into it. All
    three give the same bits."""
    n = beta.shape[0]
    if P.shape[0] > 0:
        start = packed_start(i, n)
        return P[start : start + n - i - 1]
    out = scratch[: n - i - 1]
    if starts.shape[1] > 0:
        _segment(mask, values, starts[0, i], U64(8 * starts[1, i]), i, i + 1, n, out)
        return out
    _joint_row(XT, i, beta, sum_p, total, dist, acc, out)
    return out


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def p_log_p(P, starts, mask, values, XT, beta, sum_p, total, out):
    """Partial sums over pairs j != i of p and of p log p, one per row set into
    out [2, BUILD_PARTS] (the constant parts of the KL)."""
    n = beta.shape[0]
    for part in prange(BUILD_PARTS):
        dist = np.empty(n, np.float32)
        acc = np.empty(DIST_BLOCK)
        scratch = np.empty(n, np.float32)
        s = 0.0
        t = 0.0
        for i in range(part, n - 1, BUILD_PARTS):
            seg = _piece(P, starts, mask, values, XT, beta, sum_p, total, i, dist, acc, scratch)
            for k in range(U64(seg.shape[0])):
                p = np.float64(seg[k])
                s += p
                t += p * log_positive(p)
        out[0, part] = 2.0 * s
        out[1, part] = 2.0 * t


def p_sums(P, starts, mask, values, XT, beta, sum_p, total) -> tuple[float, float]:
    """(sum of p, sum of p log p) over pairs j != i: the constant parts of the KL."""
    out = np.empty((2, BUILD_PARTS))
    p_log_p(P, starts, mask, values, XT, beta, sum_p, total, out)
    return float(np.sum(out[0])), float(np.sum(out[1]))

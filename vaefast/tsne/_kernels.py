"""Numba kernels of the exact t-SNE: affinities, gradient, KL, out-of-sample placement.

Determinism: every parallel loop runs over a fixed partition of the rows (never the
thread count in use) and each part writes only its own outputs; parts are combined in a
fixed order, so results are bit-identical for any ``n_jobs``. The embedding comes as
[dims, N] float32 (contiguous coordinate arrays, the optimizer's state) so inner loops
vectorize; X as XT [D, N] float64.
P is packed: the upper triangle, row after row (``packed_start``), float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from vaefast.tsne._vecmath import (
    EXP_COARSE_ERROR,
    exp_nonpositive,
    exp_nonpositive_coarse,
    log_positive,
    log_positive32,
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
def _piece(P, XT, beta, sum_p, total, i, dist, acc, scratch):
    """Row i's pairs (i, j > i) of P, indexed j - i - 1: a view of packed P, or computed
    into scratch."""
    n = beta.shape[0]
    if P.shape[0] > 0:
        start = packed_start(i, n)
        return P[start : start + n - i - 1]
    out = scratch[: n - i - 1]
    _joint_row(XT, i, beta, sum_p, total, dist, acc, out)
    return out


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def p_log_p(P, XT, beta, sum_p, total, out):
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
            seg = _piece(P, XT, beta, sum_p, total, i, dist, acc, scratch)
            for k in range(U64(seg.shape[0])):
                p = np.float64(seg[k])
                s += p
                t += p * log_positive(p)
        out[0, part] = 2.0 * s
        out[1, part] = 2.0 * t


def p_sums(P, XT, beta, sum_p, total) -> tuple[float, float]:
    """(sum of p, sum of p log p) over pairs j != i: the constant parts of the KL."""
    out = np.empty((2, BUILD_PARTS))
    p_log_p(P, XT, beta, sum_p, total, out)
    return float(np.sum(out[0])), float(np.sum(out[1]))


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always")
def _pair_row(y0, y1, p, i, stop, c0, c1, c2, c3):
    """Pairs (i, j) of the embedding for i < j < stop (p indexed j - i - 1): returns row
    i's sums of w, p w d and w^2 d (d = y_i - y_j, w = 1 / (1 + |d|^2)) and subtracts
    each pair's p w d and w^2 d from column j's float32 buffers c0..c3 (the pair's share
    of row j).

    The pair arithmetic is float32, on float32 coordinates (the optimizer's state, as
    scikit-learn keeps it: d is the float32 difference its gradient uses); the row sums
    go to float64 every ROW_CHUNK pairs."""
    one = np.float32(1.0)
    yi0 = y0[i]
    yi1 = y1[i]
    sw = 0.0
    a0 = 0.0
    a1 = 0.0
    r0 = 0.0
    r1 = 0.0
    first = U64(i + 1)
    for b in range(i + 1, stop, ROW_CHUNK):
        tw = np.float32(0.0)
        t0 = np.float32(0.0)
        t1 = np.float32(0.0)
        u0 = np.float32(0.0)
        u1 = np.float32(0.0)
        for j in range(U64(b), U64(min(b + ROW_CHUNK, stop))):
            d0 = yi0 - y0[j]
            d1 = yi1 - y1[j]
            w = one / (one + d0 * d0 + d1 * d1)
            pw = p[j - first] * w
            ww = w * w
            e0 = pw * d0
            e1 = pw * d1
            f0 = ww * d0
            f1 = ww * d1
            tw += w
            t0 += e0
            t1 += e1
            u0 += f0
            u1 += f1
            c0[j] -= e0
            c1[j] -= e1
            c2[j] -= f0
            c3[j] -= f1
        sw += tw
        a0 += t0
        a1 += t1
        r0 += u0
        r1 += u1
    return sw, a0, a1, r0, r1


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always")
def _pair_block(y0, y1, pa, pb, pc, a, out, c0, c1, c2, c3):
    """``_pair_row`` for the three rows a, a + 1, a + 2 at once over the columns
    j > a + 2 (row r's p indexed j - r - 1): each column's coordinates and buffers are
    loaded and stored once for three rows, which leaves the loop bound by arithmetic
    (~15 float32 operations a pair; four rows run out of vector registers and measured
    5-8% slower). Adds the 5 sums of each row, in row order, to out [15]."""
    n = y0.shape[0]
    one = np.float32(1.0)
    a0 = y0[a]
    a1 = y1[a]
    b0 = y0[a + 1]
    b1 = y1[a + 1]
    g0 = y0[a + 2]
    g1 = y1[a + 2]
    fa = U64(a + 1)
    fb = U64(a + 2)
    fc = U64(a + 3)
    for start in range(a + 3, n, ROW_CHUNK):
        aw = np.float32(0.0)
        ax = np.float32(0.0)
        ay = np.float32(0.0)
        au = np.float32(0.0)
        av = np.float32(0.0)
        bw = np.float32(0.0)
        bx = np.float32(0.0)
        by = np.float32(0.0)
        bu = np.float32(0.0)
        bv = np.float32(0.0)
        cw = np.float32(0.0)
        cx = np.float32(0.0)
        cy = np.float32(0.0)
        cu = np.float32(0.0)
        cv = np.float32(0.0)
        for j in range(U64(start), U64(min(start + ROW_CHUNK, n))):
            x0 = y0[j]
            x1 = y1[j]
            e0 = a0 - x0
            e1 = a1 - x1
            w = one / (one + e0 * e0 + e1 * e1)
            pw = pa[j - fa] * w
            ww = w * w
            aw += w
            ax += pw * e0
            ay += pw * e1
            au += ww * e0
            av += ww * e1
            f0 = b0 - x0
            f1 = b1 - x1
            z = one / (one + f0 * f0 + f1 * f1)
            pz = pb[j - fb] * z
            zz = z * z
            bw += z
            bx += pz * f0
            by += pz * f1
            bu += zz * f0
            bv += zz * f1
            k0 = g0 - x0
            k1 = g1 - x1
            v = one / (one + k0 * k0 + k1 * k1)
            pv = pc[j - fc] * v
            vv = v * v
            cw += v
            cx += pv * k0
            cy += pv * k1
            cu += vv * k0
            cv += vv * k1
            c0[j] -= pw * e0 + pz * f0 + pv * k0
            c1[j] -= pw * e1 + pz * f1 + pv * k1
            c2[j] -= ww * e0 + zz * f0 + vv * k0
            c3[j] -= ww * e1 + zz * f1 + vv * k1
        out[0] += aw
        out[1] += ax
        out[2] += ay
        out[3] += au
        out[4] += av
        out[5] += bw
        out[6] += bx
        out[7] += by
        out[8] += bu
        out[9] += bv
        out[10] += cw
        out[11] += cx
        out[12] += cy
        out[13] += cu
        out[14] += cv


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always")
def _pair_row_3d(y0, y1, y2, p, i, c0, c1, c2, c3, c4, c5):
    """``_pair_row`` in three dimensions with scikit-learn's kernel for them: Student-t
    with 2 degrees of freedom, w = (1 + |d|^2 / 2)^(-3/2). Returns row i's sums of w,
    p w d (3) and w^2 d (3); column terms into c0..c5."""
    n = y0.shape[0]
    one = np.float32(1.0)
    half = np.float32(0.5)
    yi0 = y0[i]
    yi1 = y1[i]
    yi2 = y2[i]
    sw = 0.0
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    r0 = 0.0
    r1 = 0.0
    r2 = 0.0
    first = U64(i + 1)
    for b in range(i + 1, n, ROW_CHUNK):
        tw = np.float32(0.0)
        t0 = np.float32(0.0)
        t1 = np.float32(0.0)
        t2 = np.float32(0.0)
        u0 = np.float32(0.0)
        u1 = np.float32(0.0)
        u2 = np.float32(0.0)
        for j in range(U64(b), U64(min(b + ROW_CHUNK, n))):
            d0 = yi0 - y0[j]
            d1 = yi1 - y1[j]
            d2 = yi2 - y2[j]
            q = one + half * (d0 * d0 + d1 * d1 + d2 * d2)
            w = one / (q * np.sqrt(q))
            pw = p[j - first] * w
            ww = w * w
            e0 = pw * d0
            e1 = pw * d1
            e2 = pw * d2
            f0 = ww * d0
            f1 = ww * d1
            f2 = ww * d2
            tw += w
            t0 += e0
            t1 += e1
            t2 += e2
            u0 += f0
            u1 += f1
            u2 += f2
            c0[j] -= e0
            c1[j] -= e1
            c2[j] -= e2
            c3[j] -= f0
            c4[j] -= f1
            c5[j] -= f2
        sw += tw
        a0 += t0
        a1 += t1
        a2 += t2
        r0 += u0
        r1 += u1
        r2 += u2
    return sw, a0, a1, a2, r0, r1, r2


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _kl_row(Y, p, i):
    """Sum over j > i of -p_ij log w_ij: p_ij log(1 + |y_i - y_j|^2) in 2-D,
    1.5 p_ij log(1 + |y_i - y_j|^2 / 2) in 3-D. Each log in float32 (as the gradient
    computes w: ``log_positive32``, 3e-7 relative, errors that average out over the
    pairs), summed in float64."""
    dims, n = Y.shape
    y0 = Y[0]
    y1 = Y[1]
    y2 = Y[dims - 1]  # the third coordinate in 3-D (unused in 2-D)
    v0 = y0[i]
    v1 = y1[i]
    v2 = y2[i]
    one = np.float32(1.0)
    half = np.float32(1.0 if dims == 2 else 0.5)
    third = np.float32(0.0 if dims == 2 else 1.0)
    first = U64(i + 1)
    s = 0.0
    for j in range(first, U64(n)):
        d0 = v0 - y0[j]
        d1 = v1 - y1[j]
        d2 = (v2 - y2[j]) * third
        s += np.float64(p[j - first]) * np.float64(
            log_positive32(one + half * (d0 * d0 + d1 * d1 + d2 * d2))
        )
    return s if dims == 2 else 1.5 * s


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _flush(c32, c64, start, first):
    """c64[:, start:] += c32[:, start:] in float64 (first: c64[:, start:] = ..., and
    c64[:, :start] = 0); those c32 entries <- 0, so c32 is all zeros between calls."""
    n = c32.shape[1]
    for c in range(c32.shape[0]):
        src = c32[c]
        dst = c64[c]
        if first:
            for j in range(U64(start)):
                dst[j] = 0.0
            for j in range(U64(start), U64(n)):
                dst[j] = np.float64(src[j])
                src[j] = 0.0
        else:
            for j in range(U64(start), U64(n)):
                dst[j] += np.float64(src[j])
                src[j] = 0.0


GROUP = 3  # consecutive rows that go through the columns together in 2-D (_pair_block)


def gradient_workspace(n: int, dims: int = 2) -> tuple:
    """Buffers of ``gradient`` for N points in ``dims`` (2 or 3) dimensions:
    per-row-set float32 column sums (zeros between calls) and float64 ones, row sums."""
    u = units(n)
    return (
        np.zeros((u, 2 * dims, n), np.float32),
        np.zeros((u, 2 * dims, n)),
        np.zeros((2 * dims + 2, n)),
    )


@njit(cache=True, inline="always")
def _row_sums(Y, p, i, stop, c32, rows):
    """rows[:5, i] = row i's sums over the columns i < j < stop (2-D)."""
    s, a0, a1, r0, r1 = _pair_row(Y[0], Y[1], p, i, stop, c32[0], c32[1], c32[2], c32[3])
    rows[0, i] = s
    rows[1, i] = a0
    rows[2, i] = a1
    rows[3, i] = r0
    rows[4, i] = r1


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def gradient(
    Y, P, XT, beta, sum_p, total, exaggeration, scale, with_kl, col32, col64, rows, grad, kl_rows
):
    """The exact gradient (and KL terms when asked) at the embedding Y [dims, N] float32
    (dims 2: Cauchy kernel; 3: scikit-learn's Student-t with 2 degrees of freedom), from
    packed P or, when P is empty, from P's pairs recomputed on the fly; returns Z, the
    sum of the kernel.

    Each unordered pair is computed once. Rows are split into a fixed number of sets
    (``units``, not the thread count) of interleaved blocks of GROUP rows; in 2-D a
    block's rows go through the columns together. A set's rows add their pairs' shares
    of the other rows to the set's own column buffers (float32, added to float64 every
    FLUSH_ROWS rows), and the sets' sums are added in set order: bit-identical results for
    any thread count, stored P or recomputed. Fills grad (float32, as scikit-learn's) =
    scale (exaggeration attr - rep / Z) with attr_i = sum_j p_ij w_ij (y_i - y_j), rep_i =
    sum_j w_ij^2 (y_i - y_j) (scale: 4 in 2-D, 3 in 3-D) and, with_kl, kl_rows
    (sum_j -p_ij log w_ij).
    """
    dims, n = Y.shape
    u_count = col32.shape[0]
    kl = 2 * dims + 1
    blocks = (n + GROUP - 1) // GROUP
    for u in prange(u_count):
        c32 = col32[u]
        c64 = col64[u]
        # c32 is all zeros here (each flush zeroes what it moves); c64 is written by the
        # set's first flush
        dist = np.empty(n, np.float32)
        acc = np.empty(DIST_BLOCK)
        scratch = np.empty((GROUP, n), np.float32)
        block = np.empty(5 * GROUP)
        batch = 0
        first = True
        low = u * GROUP  # columns past the first row of the batch hold its terms
        for blk in range(u, blocks, u_count):  # the set's blocks of GROUP rows
            r = blk * GROUP
            if dims == 2 and r + GROUP <= n:
                pa = _piece(P, XT, beta, sum_p, total, r, dist, acc, scratch[0])
                pb = _piece(P, XT, beta, sum_p, total, r + 1, dist, acc, scratch[1])
                pc = _piece(P, XT, beta, sum_p, total, r + 2, dist, acc, scratch[2])
                _row_sums(Y, pa, r, r + GROUP, c32, rows)  # pairs inside the block
                _row_sums(Y, pb, r + 1, r + GROUP, c32, rows)
                rows[:5, r + 2] = 0.0
                block[:] = 0.0
                _pair_block(Y[0], Y[1], pa, pb, pc, r, block, c32[0], c32[1], c32[2], c32[3])
                for g in range(GROUP):
                    for k in range(5):
                        rows[k, r + g] += block[5 * g + k]
                if with_kl:
                    rows[kl, r] = _kl_row(Y, pa, r)
                    rows[kl, r + 1] = _kl_row(Y, pb, r + 1)
                    rows[kl, r + 2] = _kl_row(Y, pc, r + 2)
            else:  # 3-D, or the last, short block
                for i in range(r, min(r + GROUP, n)):
                    p = _piece(P, XT, beta, sum_p, total, i, dist, acc, scratch[0])
                    if dims == 2:
                        _row_sums(Y, p, i, n, c32, rows)
                    else:
                        s, a0, a1, a2, r0, r1, r2 = _pair_row_3d(
                            Y[0], Y[1], Y[2], p, i, c32[0], c32[1], c32[2], c32[3], c32[4], c32[5]
                        )
                        rows[0, i] = s
                        rows[1, i] = a0
                        rows[2, i] = a1
                        rows[3, i] = a2
                        rows[4, i] = r0
                        rows[5, i] = r1
                        rows[6, i] = r2
                    if with_kl:
                        rows[kl, i] = _kl_row(Y, p, i)
            batch += GROUP
            if batch >= FLUSH_ROWS or blk + u_count >= blocks:
                _flush(c32, c64, low + 1, first)
                first = False
                batch = 0
                low = (blk + u_count) * GROUP
    z = 0.0
    for j in range(n):
        z += rows[0, j]
    z *= 2.0  # each unordered pair's w counted for both of its rows
    for j in prange(n):
        for c in range(dims):
            a = rows[1 + c, j]
            e = rows[1 + dims + c, j]
            for u in range(u_count):  # in set order, whatever thread ran the set
                a += col64[u, c, j]
                e += col64[u, dims + c, j]
            grad[c, j] = scale * (exaggeration * a - e / z)
        if with_kl:
            kl_rows[j] = 2.0 * rows[kl, j]
    return z


@njit(cache=True)
def descent_update(Y, grad, update, gains, momentum, learning_rate, min_gain):
    """One step of scikit-learn's gradient descent on float32 state, in place, with its
    float32 arithmetic; returns |gains * grad| (the norm scikit-learn reports). Gains
    +0.2 where update and grad disagree in sign, else x0.8, floored at min_gain;
    update = momentum * update - lr * gains * grad; Y += update."""
    up = np.float32(0.2)
    down = np.float32(0.8)
    floor = np.float32(min_gain)
    m = np.float32(momentum)
    lr = np.float32(learning_rate)
    norm2 = 0.0
    for c in range(Y.shape[0]):
        for i in range(Y.shape[1]):
            g = grad[c, i]
            if update[c, i] * g < 0.0:
                gains[c, i] += up
            else:
                gains[c, i] *= down
            if gains[c, i] < floor:
                gains[c, i] = floor
            g *= gains[c, i]
            norm2 += np.float64(g) * np.float64(g)
            update[c, i] = m * update[c, i] - lr * g
            Y[c, i] += update[c, i]
    return math.sqrt(norm2)


PLACE_BLOCK = 4  # new points that go through the reference together (loads shared)
# A new point's p below this is taken as 0: such a p (the row sums to 1) is far below
# float32's resolution of the sums it enters, and p * w * d would fall into float32's
# denormal range, where arithmetic runs at a fraction of its speed (1.75x slower
# placements on real VAE means).
P_FLOOR = 1e-20


@njit(cache=True, fastmath=FAST, error_model="numpy")
def _block_sums(pos, h0, h1, l0, l1, prow, sums):
    """Sums over reference points j of w, p_j w d and w^2 d (d = x - y_j,
    w = 1 / (1 + |d|^2)) for the PLACE_BLOCK points x at pos [4, 2] (float64) in one pass
    over the references, each reference loaded once for all four: sums[q] = (w, p w d0,
    p w d1, w^2 d0, w^2 d1) of point q. As the fit kernel computes a row (``_pair_row``):
    points and references split into float32 high and low parts so d is exact to
    ~1e-14 |y|, float32 pair arithmetic, float64 sums every ROW_CHUNK pairs. Every point
    is summed in the same order whatever block it is in."""
    one = np.float32(1.0)
    x0 = np.float32(pos[0, 0])
    x1 = np.float32(pos[1, 0])
    x2 = np.float32(pos[2, 0])
    x3 = np.float32(pos[3, 0])
    y0 = np.float32(pos[0, 1])
    y1 = np.float32(pos[1, 1])
    y2 = np.float32(pos[2, 1])
    y3 = np.float32(pos[3, 1])
    lx0 = np.float32(pos[0, 0] - np.float64(x0))
    lx1 = np.float32(pos[1, 0] - np.float64(x1))
    lx2 = np.float32(pos[2, 0] - np.float64(x2))
    lx3 = np.float32(pos[3, 0] - np.float64(x3))
    ly0 = np.float32(pos[0, 1] - np.float64(y0))
    ly1 = np.float32(pos[1, 1] - np.float64(y1))
    ly2 = np.float32(pos[2, 1] - np.float64(y2))
    ly3 = np.float32(pos[3, 1] - np.float64(y3))
    p0 = prow[0]
    p1 = prow[1]
    p2 = prow[2]
    p3 = prow[3]
    n = h0.shape[0]
    sums[:, :] = 0.0
    z = np.float32(0.0)
    for b in range(0, n, ROW_CHUNK):
        w0 = z
        a0 = z
        c0 = z
        r0 = z
        s0 = z  # noqa: E702
        w1 = z
        a1 = z
        c1 = z
        r1 = z
        s1 = z  # noqa: E702
        w2 = z
        a2 = z
        c2 = z
        r2 = z
        s2 = z  # noqa: E702
        w3 = z
        a3 = z
        c3 = z
        r3 = z
        s3 = z  # noqa: E702
        for j in range(U64(b), U64(min(b + ROW_CHUNK, n))):
            hx = h0[j]
            hy = h1[j]
            gx = l0[j]
            gy = l1[j]
            d0 = (x0 - hx) + (lx0 - gx)
            e0 = (y0 - hy) + (ly0 - gy)
            v0 = one / (one + d0 * d0 + e0 * e0)
            q0 = p0[j] * v0
            t0 = v0 * v0
            w0 += v0
            a0 += q0 * d0
            c0 += q0 * e0
            r0 += t0 * d0
            s0 += t0 * e0
            d1 = (x1 - hx) + (lx1 - gx)
            e1 = (y1 - hy) + (ly1 - gy)
            v1 = one / (one + d1 * d1 + e1 * e1)
            q1 = p1[j] * v1
            t1 = v1 * v1
            w1 += v1
            a1 += q1 * d1
            c1 += q1 * e1
            r1 += t1 * d1
            s1 += t1 * e1
            d2 = (x2 - hx) + (lx2 - gx)
            e2 = (y2 - hy) + (ly2 - gy)
            v2 = one / (one + d2 * d2 + e2 * e2)
            q2 = p2[j] * v2
            t2 = v2 * v2
            w2 += v2
            a2 += q2 * d2
            c2 += q2 * e2
            r2 += t2 * d2
            s2 += t2 * e2
            d3 = (x3 - hx) + (lx3 - gx)
            e3 = (y3 - hy) + (ly3 - gy)
            v3 = one / (one + d3 * d3 + e3 * e3)
            q3 = p3[j] * v3
            t3 = v3 * v3
            w3 += v3
            a3 += q3 * d3
            c3 += q3 * e3
            r3 += t3 * d3
            s3 += t3 * e3
        sums[0, 0] += w0
        sums[0, 1] += a0
        sums[0, 2] += c0
        sums[0, 3] += r0
        sums[0, 4] += s0  # noqa: E702,E501
        sums[1, 0] += w1
        sums[1, 1] += a1
        sums[1, 2] += c1
        sums[1, 3] += r1
        sums[1, 4] += s1  # noqa: E702,E501
        sums[2, 0] += w2
        sums[2, 1] += a2
        sums[2, 2] += c2
        sums[2, 3] += r2
        sums[2, 4] += s2  # noqa: E702,E501
        sums[3, 0] += w3
        sums[3, 1] += a3
        sums[3, 2] += c3
        sums[3, 3] += r3
        sums[3, 4] += s3  # noqa: E702,E501


@njit(cache=True)
def _k_nearest(dist, out):
    """Indices of the len(out) smallest entries of dist (ties: the lower index), in
    increasing distance: one pass, insertion into the running k best."""
    k = out.shape[0]
    best = np.full(k, np.inf, np.float32)
    for j in range(dist.shape[0]):
        d = dist[j]
        if d < best[k - 1]:
            r = k - 1
            while r > 0 and best[r - 1] > d:
                best[r] = best[r - 1]
                out[r] = out[r - 1]
                r -= 1
            best[r] = d
            out[r] = j


@njit(cache=True)
def _place_block(
    dists,
    hl,
    k,
    log_perplexity,
    n_iter,
    learning_rate,
    exaggeration,
    momentum,
    max_grad_norm,
    min_gain,
    out,
):
    """Up to PLACE_BLOCK new points, each alone against the fixed reference embedding
    (``hl``: its coordinates as float32 high parts, then low parts, [4, N]): a
    perplexity-calibrated conditional P over all reference points from its squared
    distances (a row of ``dists``, float32; the row sums to 1), then ``n_iter`` steps of
    gradient descent with gains and momentum on exaggeration * attraction - repulsion /
    Z, with Z its own normalizer and the gradient clipped to ``max_grad_norm``
    (openTSNE's transform semantics, computed exactly) from the median position of its
    ``k`` nearest references. The points share passes over the references; each point's
    arithmetic is its own."""
    m = dists.shape[0]
    n = dists.shape[1]
    prow = np.zeros((PLACE_BLOCK, n), np.float32)
    row = np.empty(n)
    pos = np.zeros((PLACE_BLOCK, 2))
    nearest = np.empty(k, np.int64)
    for q in range(m):
        _row_probabilities(dists[q], -1, log_perplexity, row)
        for j in range(n):  # (see P_FLOOR)
            prow[q, j] = np.float32(row[j]) if row[j] >= P_FLOOR else np.float32(0.0)
        _k_nearest(dists[q], nearest)
        for c in range(2):  # the median position of the k nearest references
            pos[q, c] = np.median(
                hl[c][nearest].astype(np.float64) + hl[2 + c][nearest].astype(np.float64)
            )
    update = np.zeros((PLACE_BLOCK, 2))
    gains = np.ones((PLACE_BLOCK, 2))
    sums = np.empty((PLACE_BLOCK, 5))
    for _ in range(n_iter):
        _block_sums(pos, hl[0], hl[1], hl[2], hl[3], prow, sums)
        for q in range(m):
            g0 = exaggeration * sums[q, 1] - sums[q, 3] / sums[q, 0]
            g1 = exaggeration * sums[q, 2] - sums[q, 4] / sums[q, 0]
            norm = math.sqrt(g0 * g0 + g1 * g1)
            if norm > max_grad_norm:
                g0 *= max_grad_norm / norm
                g1 *= max_grad_norm / norm
            for c, g in ((0, g0), (1, g1)):
                gains[q, c] = (
                    gains[q, c] + 0.2
                    if update[q, c] * g < 0.0
                    else max(gains[q, c] * 0.8, min_gain)
                )
                update[q, c] = momentum * update[q, c] - learning_rate * gains[q, c] * g
                pos[q, c] += update[q, c]
    for q in range(m):
        out[q, 0] = pos[q, 0]
        out[q, 1] = pos[q, 1]


@njit(cache=True)
def _interpolate(grid, frame, p0, p1):
    """Bilinear interpolation of the three tabulated repulsion fields (Z, R0, R1) at
    (p0, p1); Z = 0 when the point lies outside the grid."""
    g = grid.shape[1]
    fx = (p0 - frame[0]) / frame[2]
    fy = (p1 - frame[1]) / frame[2]
    if not (0.0 <= fx < g - 1 and 0.0 <= fy < g - 1):
        return 0.0, 0.0, 0.0
    ix = int(fx)
    iy = int(fy)
    tx = fx - ix
    ty = fy - iy
    out = np.empty(3)
    for f in range(3):
        out[f] = (1.0 - tx) * ((1.0 - ty) * grid[f, ix, iy] + ty * grid[f, ix, iy + 1]) + tx * (
            (1.0 - ty) * grid[f, ix + 1, iy] + ty * grid[f, ix + 1, iy + 1]
        )
    return out[0], out[1], out[2]


@njit(cache=True)
def _place_interpolated(
    dist,
    hl,
    grid,
    frame,
    k,
    attract,
    log_perplexity,
    n_iter,
    learning_rate,
    exaggeration,
    momentum,
    max_grad_norm,
    min_gain,
):
    """One new point placed like ``_place_block`` places it, with two approximations
    (FIt-SNE's and openTSNE's): P over its ``attract`` nearest references only (their
    attraction exact), and the repulsion of all references read from the tabulated
    fields (``grid``; computed exactly wherever the point leaves the grid)."""
    n = dist.shape[0]
    m = min(attract, n)
    near = np.empty(m, np.int64)
    _k_nearest(dist, near)
    d = np.empty(m, np.float32)
    ny0 = np.empty(m)
    ny1 = np.empty(m)
    for i in range(m):
        d[i] = dist[near[i]]
        ny0[i] = np.float64(hl[0][near[i]]) + np.float64(hl[2][near[i]])
        ny1[i] = np.float64(hl[1][near[i]]) + np.float64(hl[3][near[i]])
    p = np.empty(m)
    _row_probabilities(d, -1, log_perplexity, p)
    p0 = np.median(ny0[: min(k, m)])
    p1 = np.median(ny1[: min(k, m)])
    u0 = 0.0
    u1 = 0.0
    g0s = 1.0
    g1s = 1.0
    pos = np.empty((PLACE_BLOCK, 2))
    none = np.zeros((PLACE_BLOCK, 0), np.float32)  # zero P rows, made only if needed
    sums = np.empty((PLACE_BLOCK, 5))
    for _ in range(n_iter):
        a0 = 0.0
        a1 = 0.0
        for i in range(m):
            e0 = p0 - ny0[i]
            e1 = p1 - ny1[i]
            w = p[i] / (1.0 + e0 * e0 + e1 * e1)
            a0 += w * e0
            a1 += w * e1
        z, r0, r1 = _interpolate(grid, frame, p0, p1)
        if z == 0.0:  # off the grid: the exact sums
            if none.shape[1] == 0:
                none = np.zeros((PLACE_BLOCK, n), np.float32)
            pos[:, 0] = p0
            pos[:, 1] = p1
            _block_sums(pos, hl[0], hl[1], hl[2], hl[3], none, sums)
            z, r0, r1 = sums[0, 0], sums[0, 3], sums[0, 4]
        g0 = exaggeration * a0 - r0 / z
        g1 = exaggeration * a1 - r1 / z
        norm = math.sqrt(g0 * g0 + g1 * g1)
        if norm > max_grad_norm:
            g0 *= max_grad_norm / norm
            g1 *= max_grad_norm / norm
        g0s = g0s + 0.2 if u0 * g0 < 0.0 else max(g0s * 0.8, min_gain)
        g1s = g1s + 0.2 if u1 * g1 < 0.0 else max(g1s * 0.8, min_gain)
        u0 = momentum * u0 - learning_rate * g0s * g0
        u1 = momentum * u1 - learning_rate * g1s * g1
        p0 += u0
        p1 += u1
    return p0, p1


@njit(parallel=True, cache=True)
def repulsion_grid(hl, frame, out):
    """The repulsion of all reference points (``hl``) tabulated on a square grid (node
    (a, b) at (frame[0] + a frame[2], frame[1] + b frame[2])): out [3, G, G] = Z (sum of
    w), and the sums of w^2 d over both coordinates, exactly as the exact placement sums
    them."""
    g = out.shape[1]
    n = hl.shape[1]
    for a in prange(g):
        none = np.zeros((PLACE_BLOCK, n), np.float32)
        pos = np.empty((PLACE_BLOCK, 2))
        sums = np.empty((PLACE_BLOCK, 5))
        for b0 in range(0, g, PLACE_BLOCK):
            for q in range(PLACE_BLOCK):
                pos[q, 0] = frame[0] + a * frame[2]
                pos[q, 1] = frame[1] + min(b0 + q, g - 1) * frame[2]
            _block_sums(pos, hl[0], hl[1], hl[2], hl[3], none, sums)
            for q in range(min(PLACE_BLOCK, g - b0)):
                out[0, a, b0 + q] = sums[q, 0]
                out[1, a, b0 + q] = sums[q, 3]
                out[2, a, b0 + q] = sums[q, 4]


@njit(cache=True)
def _place_rows(
    dists,
    hl,
    grid,
    frame,
    k,
    attract,
    log_perplexity,
    n_iter,
    learning_rate,
    exaggeration,
    momentum,
    max_grad_norm,
    min_gain,
    out,
):
    """Rows of ``dists`` placed exactly (an empty ``grid``) or interpolated."""
    if grid.shape[1] == 0:
        _place_block(
            dists,
            hl,
            k,
            log_perplexity,
            n_iter,
            learning_rate,
            exaggeration,
            momentum,
            max_grad_norm,
            min_gain,
            out,
        )
        return
    for q in range(dists.shape[0]):
        out[q, 0], out[q, 1] = _place_interpolated(
            dists[q],
            hl,
            grid,
            frame,
            k,
            attract,
            log_perplexity,
            n_iter,
            learning_rate,
            exaggeration,
            momentum,
            max_grad_norm,
            min_gain,
        )


@njit(parallel=True, cache=True)
def place_points(
    X_new,
    XT_ref,
    hl,
    grid,
    frame,
    k,
    attract,
    log_perplexity,
    n_iter,
    learning_rate,
    exaggeration,
    momentum,
    max_grad_norm,
    min_gain,
    out,
):
    """``_place_rows`` for each block of rows of X_new (float64), their distances to the
    reference points (XT_ref [D, N] float64) summed over the features (few features)."""
    m = X_new.shape[0]
    n = XT_ref.shape[1]
    for blk in prange((m + PLACE_BLOCK - 1) // PLACE_BLOCK):
        lo = blk * PLACE_BLOCK
        hi = min(lo + PLACE_BLOCK, m)
        dists = np.empty((hi - lo, n), np.float32)
        acc = np.empty(DIST_BLOCK)
        for r in range(lo, hi):
            _sq_distances(X_new[r], XT_ref, 0, dists[r - lo], acc)
        _place_rows(
            dists,
            hl,
            grid,
            frame,
            k,
            attract,
            log_perplexity,
            n_iter,
            learning_rate,
            exaggeration,
            momentum,
            max_grad_norm,
            min_gain,
            out[lo:hi],
        )


@njit(parallel=True, cache=True)
def place_points_from_distances(
    D,
    hl,
    grid,
    frame,
    k,
    attract,
    log_perplexity,
    n_iter,
    learning_rate,
    exaggeration,
    momentum,
    max_grad_norm,
    min_gain,
    out,
):
    """``_place_rows`` for each block of rows of given squared distances D [M, N]
    float32 (many features: they come from a GEMM)."""
    m = D.shape[0]
    for blk in prange((m + PLACE_BLOCK - 1) // PLACE_BLOCK):
        lo = blk * PLACE_BLOCK
        hi = min(lo + PLACE_BLOCK, m)
        _place_rows(
            D[lo:hi],
            hl,
            grid,
            frame,
            k,
            attract,
            log_perplexity,
            n_iter,
            learning_rate,
            exaggeration,
            momentum,
            max_grad_norm,
            min_gain,
            out[lo:hi],
        )

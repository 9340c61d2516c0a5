"""Numba kernels of the exact t-SNE's objective and optimizer (``vaefast.tsne.objective``,
``vaefast.tsne.optimizer``): the KL gradient over all pairs and one gradient-descent step.

The embedding comes as [dims, N] float32 (contiguous coordinate arrays, the optimizer's
state) so inner loops vectorize; rows are summed in fixed sets (``units``), never by the
thread count in use, so results are bit-identical for any ``n_jobs``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from vaefast.tsne._simd import (
    LANES,
    bits16,
    expand,
    popcount,
    fma,
    keep_first,
    load,
    load_first,
    splat,
    store,
    store_first,
    total,
)
from vaefast.tsne._vecmath import log_positive32
from vaefast.tsne._affinity_kernels import (
    DIST_BLOCK,
    FAST,
    FLUSH_ROWS,
    ROW_CHUNK,
    U64,
    _piece,
    MACHINE_EPSILON,
    _segment,
    units,
)


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


@njit(cache=True, inline="always")
def _kernel(a0, a1, x0, x1, p, one, k, full):
    """One row's pairs with 16 columns (coordinates a0, a1 against x0, x1; their p): d0,
    d1, w, p w and w^2, with w zero past the first k lanes unless ``full``."""
    d0 = a0 - x0
    d1 = a1 - x1
    w = one / fma(d0, d0, fma(d1, d1, one))
    if not full:
        w = keep_first(w, k)
    return d0, d1, w, p * w, w * w


@njit(cache=True, inline="always")
def _p_lanes(src, r, k, full, offset, cursor):
    """Row r's (0, 1, 2 of the block) p over 16 columns from offset j - r - 1 of its row
    (the first k lanes when not ``full``) and the row's next value index: a load of
    packed P, or from sparse P (``src[0]``) the row's bits and an expansion of its next
    kept values, eps where a bit is clear."""
    sparse, pa, pb, pc, mask, values, ba, bb, bc, eps = src
    if not sparse:
        p = pa if r == 0 else pb if r == 1 else pc
        return (load(p, offset) if full else load_first(p, offset, k)), cursor
    m = bits16(mask, (ba if r == 0 else bb if r == 1 else bc) + offset)
    if not full:
        m &= (U64(1) << k) - U64(1)
    return expand(values, cursor, m, eps), cursor + popcount(m)


@njit(cache=True, inline="always")
def _lanes(y0, y1, src, rows, j, k, full, c0, c1, c2, c3, s, ks):
    """``_pair_block``'s step over the 16 columns j..j + 15 (the first k when not
    ``full``): returns the three rows' 15 sums s, each plus its lanes' terms, and their
    next value indices ks (sparse P), and subtracts the step's shares from the columns'
    buffers."""
    fa, fb, fc, a0, a1, b0, b1, g0, g1, one = rows
    if full:
        x0, x1 = load(y0, j), load(y1, j)
    else:
        x0, x1 = load_first(y0, j, k), load_first(y1, j, k)
    qa, ka = _p_lanes(src, 0, k, full, j - fa, ks[0])
    qb, kb = _p_lanes(src, 1, k, full, j - fb, ks[1])
    qc, kc = _p_lanes(src, 2, k, full, j - fc, ks[2])
    e0, e1, w, pw, ww = _kernel(a0, a1, x0, x1, qa, one, k, full)
    f0, f1, z, pz, zz = _kernel(b0, b1, x0, x1, qb, one, k, full)
    k0, k1, v, pv, vv = _kernel(g0, g1, x0, x1, qc, one, k, full)
    t0 = fma(pv, k0, fma(pz, f0, pw * e0))
    t1 = fma(pv, k1, fma(pz, f1, pw * e1))
    t2 = fma(vv, k0, fma(zz, f0, ww * e0))
    t3 = fma(vv, k1, fma(zz, f1, ww * e1))
    if full:
        store(c0, j, load(c0, j) - t0)
        store(c1, j, load(c1, j) - t1)
        store(c2, j, load(c2, j) - t2)
        store(c3, j, load(c3, j) - t3)
    else:
        store_first(c0, j, k, load_first(c0, j, k) - t0)
        store_first(c1, j, k, load_first(c1, j, k) - t1)
        store_first(c2, j, k, load_first(c2, j, k) - t2)
        store_first(c3, j, k, load_first(c3, j, k) - t3)
    return (
        s[0] + w,
        fma(pw, e0, s[1]),
        fma(pw, e1, s[2]),
        fma(ww, e0, s[3]),
        fma(ww, e1, s[4]),
        s[5] + z,
        fma(pz, f0, s[6]),
        fma(pz, f1, s[7]),
        fma(zz, f0, s[8]),
        fma(zz, f1, s[9]),
        s[10] + v,
        fma(pv, k0, s[11]),
        fma(pv, k1, s[12]),
        fma(vv, k0, s[13]),
        fma(vv, k1, s[14]),
    ), (ka, kb, kc)


@njit(cache=True, inline="always")
def _pair_block(y0, y1, src, a, lo, hi, out, c0, c1, c2, c3, ks):
    """``_pair_row`` for the three rows a, a + 1, a + 2 at once over the columns
    lo <= j < hi, lo = a + 3 + a multiple of ROW_CHUNK, with their p from ``src``
    (``_p_lanes``: rows of packed P, row r's indexed j - r - 1, or sparse P with the
    rows' next value indices ks; returns those after hi), 16 columns a step
    (``_simd``: one zmm register on AVX-512, two ymm on AVX2; the last step masked):
    each column's coordinates and buffers are loaded and stored once for three rows, and
    each product that enters both a row's and a column's sum is fused into both. Adds
    the 5 sums of each row, in row order, to out [15] every ROW_CHUNK columns: the same
    bits whether the columns come in one call or chunk by chunk."""
    rows = (
        U64(a + 1),
        U64(a + 2),
        U64(a + 3),
        splat(y0[a]),
        splat(y1[a]),
        splat(y0[a + 1]),
        splat(y1[a + 1]),
        splat(y0[a + 2]),
        splat(y1[a + 2]),
        splat(1.0),
    )
    z = splat(0.0)
    step = U64(LANES)
    for start in range(lo, hi, ROW_CHUNK):
        stop = U64(min(start + ROW_CHUNK, hi))
        s = (z, z, z, z, z, z, z, z, z, z, z, z, z, z, z)  # the 15 sums
        j = U64(start)
        while j + step <= stop:
            s, ks = _lanes(y0, y1, src, rows, j, step, True, c0, c1, c2, c3, s, ks)
            j += step
        if j < stop:
            s, ks = _lanes(y0, y1, src, rows, j, stop - j, False, c0, c1, c2, c3, s, ks)
        for t in range(15):
            out[t] += total(s[t])
    return ks


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


@njit(cache=True, inline="always")
def _row_sums_3d(Y, p, i, c32, rows):
    """rows[:7, i] = row i's sums over the columns j > i (3-D)."""
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


@njit(cache=True, inline="always")
def _group_start(Y, pa, pb, r, c32, rows, block):
    """The pairs inside the block of rows r, r + 1, r + 2 (2-D); the block's sums <- 0."""
    _row_sums(Y, pa, r, r + GROUP, c32, rows)
    _row_sums(Y, pb, r + 1, r + GROUP, c32, rows)
    rows[:5, r + 2] = 0.0
    block[:] = 0.0


@njit(cache=True, inline="always")
def _group_end(r, rows, block):
    """Adds the block's sums (``_pair_block``) to its rows'."""
    for g in range(GROUP):
        for k in range(5):
            rows[k, r + g] += block[5 * g + k]


@njit(cache=True)
def _dense_group(Y, pa, pb, pc, mask, values, r, c32, rows, block):
    """The block of rows r, r + 1, r + 2 (2-D) from their rows of packed P (pa, pb, pc).
    Compiled on its own, as ``_sparse_group``: each inlines ``_pair_block`` with its
    kind of P fixed, and Numba's parallel analysis never sees its tuples."""
    _group_start(Y, pa, pb, r, c32, rows, block)
    src = (False, pa, pb, pc, mask, values, U64(0), U64(0), U64(0), splat(0.0))
    ks = (0, 0, 0)
    _pair_block(Y[0], Y[1], src, r, r + 3, Y.shape[1], block, c32[0], c32[1], c32[2], c32[3], ks)
    _group_end(r, rows, block)


@njit(cache=True)
def _sparse_group(Y, starts, mask, values, r, scratch, c32, rows, block):
    """The block of rows r, r + 1, r + 2 (2-D) from sparse P: the pairs inside the
    block from its first rows rebuilt, then the rows' kept values expanded 16 columns
    at a time as the block's arithmetic needs them (the same bits as from whole rows)."""
    ba = U64(8 * starts[1, r])
    bb = U64(8 * starts[1, r + 1])
    bc = U64(8 * starts[1, r + 2])
    ka = _segment(mask, values, starts[0, r], ba, r, r + 1, r + 3, scratch[0])
    kb = _segment(mask, values, starts[0, r + 1], bb, r + 1, r + 2, r + 3, scratch[1])
    _group_start(Y, scratch[0], scratch[1], r, c32, rows, block)
    eps = splat(MACHINE_EPSILON)
    src = (True, scratch[0], scratch[1], scratch[2], mask, values, ba, bb, bc, eps)
    ks = (ka, kb, starts[0, r + 2])
    _pair_block(Y[0], Y[1], src, r, r + 3, Y.shape[1], block, c32[0], c32[1], c32[2], c32[3], ks)
    _group_end(r, rows, block)


@njit(parallel=True, cache=True, fastmath=FAST, error_model="numpy")
def gradient(
    Y,
    P,
    starts,
    mask,
    values,
    XT,
    beta,
    sum_p,
    total,
    exaggeration,
    scale,
    with_kl,
    col32,
    col64,
    rows,
    grad,
    kl_rows,
):
    """The exact gradient (and KL terms when asked) at the embedding Y [dims, N] float32
    (dims 2: Cauchy kernel; 3: scikit-learn's Student-t with 2 degrees of freedom), from
    packed P, or its pairs above eps (starts, mask, values: ``joint_sparse``), or,
    when both are empty, P's pairs recomputed on the fly; returns Z, the sum of the
    kernel.

    Each unordered pair is computed once. Rows are split into a fixed number of sets
    (``units``, not the thread count) of interleaved blocks of GROUP rows; in 2-D a
    block's rows go through the columns together. A set's rows add their pairs' shares
    of the other rows to the set's own column buffers (float32, added to float64 every
    FLUSH_ROWS rows), and the sets' sums are added in set order: bit-identical results for
    any thread count, P stored, sparse or recomputed. Fills grad (float32, as
    scikit-learn's) = scale (exaggeration attr - rep / Z) with attr_i = sum_j p_ij w_ij
    (y_i - y_j), rep_i = sum_j w_ij^2 (y_i - y_j) (scale: 4 in 2-D, 3 in 3-D) and,
    with_kl, kl_rows (sum_j -p_ij log w_ij).
    """
    dims, n = Y.shape
    u_count = col32.shape[0]
    kl = 2 * dims + 1
    blocks = (n + GROUP - 1) // GROUP
    chunked = P.shape[0] == 0 and starts.shape[1] > 0
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
            if dims == 2 and r + GROUP <= n and chunked and not with_kl:
                _sparse_group(Y, starts, mask, values, r, scratch, c32, rows, block)
            elif dims == 2 and r + GROUP <= n:
                pa = _piece(
                    P, starts, mask, values, XT, beta, sum_p, total, r, dist, acc, scratch[0]
                )
                pb = _piece(
                    P, starts, mask, values, XT, beta, sum_p, total, r + 1, dist, acc, scratch[1]
                )
                pc = _piece(
                    P, starts, mask, values, XT, beta, sum_p, total, r + 2, dist, acc, scratch[2]
                )
                _dense_group(Y, pa, pb, pc, mask, values, r, c32, rows, block)
                if with_kl:
                    rows[kl, r] = _kl_row(Y, pa, r)
                    rows[kl, r + 1] = _kl_row(Y, pb, r + 1)
                    rows[kl, r + 2] = _kl_row(Y, pc, r + 2)
            else:  # 3-D, or the last, short block
                for i in range(r, min(r + GROUP, n)):
                    p = _piece(
                        P, starts, mask, values, XT, beta, sum_p, total, i, dist, acc, scratch[0]
                    )
                    if dims == 2:
                        _row_sums(Y, p, i, n, c32, rows)
                    else:
                        _row_sums_3d(Y, p, i, c32, rows)
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

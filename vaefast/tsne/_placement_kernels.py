"""Numba kernels of the out-of-sample placement (``vaefast.tsne.transform``): each new
point's affinities to the fixed reference and its own gradient descent against it,
exact or through a tabulated repulsion grid.

Each new point's arithmetic is its own (blocks of ``PLACE_BLOCK`` share loads only), so
positions do not depend on how the rows are split or on ``n_jobs``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from vaefast.tsne._affinity_kernels import (
    DIST_BLOCK,
    FAST,
    ROW_CHUNK,
    U64,
    _row_probabilities,
    _sq_distances,
)


PLACE_BLOCK = 4  # new points that go through the reference together (loads shared)
LANES = 256  # a placement's parallel lanes, each with its workspaces (see place_points)
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
    prow,
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
    arithmetic is its own. ``prow`` [PLACE_BLOCK, N] float32: the caller's workspace
    for the P rows (rows past ``m`` are zeroed here)."""
    m = dists.shape[0]
    n = dists.shape[1]
    prow[m:] = 0.0
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
    return (
        _bilinear(grid, 0, ix, iy, tx, ty),
        _bilinear(grid, 1, ix, iy, tx, ty),
        _bilinear(grid, 2, ix, iy, tx, ty),
    )


@njit(cache=True, inline="always")
def _bilinear(grid, f, ix, iy, tx, ty):
    """Field ``f`` of ``grid`` between its nodes (ix, iy) and (ix + 1, iy + 1)."""
    return (1.0 - tx) * ((1.0 - ty) * grid[f, ix, iy] + ty * grid[f, ix, iy + 1]) + tx * (
        (1.0 - ty) * grid[f, ix + 1, iy] + ty * grid[f, ix + 1, iy + 1]
    )


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
    zeros,
):
    """One new point placed like ``_place_block`` places it, with two approximations
    (FIt-SNE's and openTSNE's): P over its ``attract`` nearest references only (their
    attraction exact), and the repulsion of all references read from the tabulated
    fields (``grid``; computed exactly wherever the point leaves the grid, with
    ``zeros`` [PLACE_BLOCK, N] float32 as its P rows)."""
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
            pos[:, 0] = p0
            pos[:, 1] = p1
            _block_sums(pos, hl[0], hl[1], hl[2], hl[3], zeros, sums)
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
    prow,
    zeros,
    out,
):
    """Rows of ``dists`` placed exactly (an empty ``grid``; ``prow``: the P rows'
    workspace) or interpolated (``zeros``: zero P rows, read only)."""
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
            prow,
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
            zeros,
        )


@njit(cache=True)
def _workspaces(grid, n):
    """The placement's [PLACE_BLOCK, n] float32 buffers: P rows (exact: one per thread,
    written) and zero P rows (interpolated: shared, read only); the other one empty."""
    exact = grid.shape[1] == 0
    return (
        np.empty((PLACE_BLOCK, n if exact else 0), np.float32),
        np.zeros((PLACE_BLOCK, 0 if exact else n), np.float32),
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
    reference points (XT_ref [D, N] float64) summed over the features (few features).

    Up to LANES lanes (more than the threads, so that they share the work evenly), each
    taking every lanes-th block with workspaces made once: made per block, a 160 kB
    buffer is mapped and unmapped by the kernel each time wherever glibc's mmap threshold
    is fixed — as in Dask's workers, which set ``MALLOC_TRIM_THRESHOLD_`` (640k page
    faults and ~20 % more time per 65,536 rows there, measured)."""
    m = X_new.shape[0]
    n = XT_ref.shape[1]
    blocks = (m + PLACE_BLOCK - 1) // PLACE_BLOCK
    lanes = min(LANES, blocks)
    zeros = _workspaces(grid, n)[1]
    for lane in prange(lanes):
        prow = _workspaces(grid, n)[0]
        dists = np.empty((PLACE_BLOCK, n), np.float32)
        acc = np.empty(DIST_BLOCK)
        for blk in range(lane, blocks, lanes):
            lo = blk * PLACE_BLOCK
            hi = min(lo + PLACE_BLOCK, m)
            for r in range(lo, hi):
                _sq_distances(X_new[r], XT_ref, 0, dists[r - lo], acc)
            _place_rows(
                dists[: hi - lo],
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
                prow,
                zeros,
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
    float32 (many features: they come from a GEMM); threads and workspaces as
    ``place_points``."""
    m = D.shape[0]
    blocks = (m + PLACE_BLOCK - 1) // PLACE_BLOCK
    lanes = min(LANES, blocks)
    zeros = _workspaces(grid, D.shape[1])[1]
    for lane in prange(lanes):
        prow = _workspaces(grid, D.shape[1])[0]
        for blk in range(lane, blocks, lanes):
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
                prow,
                zeros,
                out[lo:hi],
            )

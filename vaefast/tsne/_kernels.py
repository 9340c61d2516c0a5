"""Numba kernels of the exact t-SNE: affinities, gradient, KL, out-of-sample placement.

Every parallel loop runs over rows and writes only its own rows, and every reduction over
rows is done serially afterwards, so results are bit-identical for any thread count.
Embeddings are passed as two contiguous coordinate arrays (y0, y1) so the inner loops
vectorize.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from vaefast.tsne._vecmath import exp_nonpositive

# scikit-learn's constants (sklearn/manifold/_utils.pyx and _t_sne.py), kept bit-exact:
# its C floats are float32 values promoted to double.
PERPLEXITY_TOLERANCE = float(np.float32(1e-5))
EPSILON_DBL = float(np.float32(1e-8))
MACHINE_EPSILON = float(np.finfo(np.float64).eps)
N_STEPS = 100

# Reassociation lets LLVM vectorize the pair sums; no approximate math functions.
PAIR_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(cache=True, fastmath=PAIR_FASTMATH)
def _sq_distances_to(x, X, out):
    """Squared Euclidean distances from point x to every row of X, rounded to float32 as
    scikit-learn rounds them before its binary search."""
    n, d = X.shape
    for j in range(n):
        s = 0.0
        for k in range(d):
            diff = np.float64(x[k]) - np.float64(X[j, k])
            s += diff * diff
        out[j] = np.float32(s)


@njit(cache=True)
def _sq_distances_row(X, i, out):
    _sq_distances_to(X[i], X, out)


@njit(cache=True)
def _search_beta(dist, skip, log_perplexity, prow, buf):
    """scikit-learn's binary search for one row's precision beta; fills prow with the
    conditional probabilities and returns (beta, sum of unnormalized probabilities) that
    produced them (when 100 steps do not converge, scikit-learn's P also comes from the
    last beta evaluated, not the next one). buf: float64 scratch of len(dist)."""
    n = dist.shape[0]
    beta_min = -np.inf
    beta_max = np.inf
    beta = 1.0
    sum_pi = 0.0
    used = beta
    for _ in range(N_STEPS):
        used = beta
        for j in range(n):
            prow[j] = -np.float64(dist[j]) * beta
        exp_nonpositive(prow, prow, buf)
        if skip >= 0:
            prow[skip] = 0.0
        sum_pi = 0.0
        for j in range(n):
            sum_pi += prow[j]
        if sum_pi == 0.0:
            sum_pi = EPSILON_DBL
        sum_disti_pi = 0.0
        for j in range(n):
            prow[j] /= sum_pi
            sum_disti_pi += np.float64(dist[j]) * prow[j]
        entropy = math.log(sum_pi) + beta * sum_disti_pi
        entropy_diff = entropy - log_perplexity
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
    return used, sum_pi


@njit(parallel=True, cache=True)
def conditional_probabilities(X, log_perplexity, beta, sum_p, row_total):
    """Per-row precision beta, normalizer and total of the conditional P (O(N) memory:
    the rows themselves are not kept; ``joint_matrix`` or the gradient rebuild them)."""
    n = X.shape[0]
    for i in prange(n):
        dist = np.empty(n, np.float32)
        prow = np.empty(n, np.float64)
        _sq_distances_row(X, i, dist)
        b, s = _search_beta(dist, i, log_perplexity, prow, np.empty(n, np.float64))
        beta[i] = b
        sum_p[i] = s
        row_total[i] = prow.sum()


@njit(parallel=True, cache=True)
def conditional_probabilities_from_distances(D, log_perplexity, C, beta, sum_p, row_total):
    """``conditional_probabilities`` from given squared distances D [N, N] (float32, as
    scikit-learn rounds them): the dense conditional P into C [N, N]."""
    n = D.shape[0]
    for i in prange(n):
        prow = np.empty(n, np.float64)
        b, s = _search_beta(D[i], i, log_perplexity, prow, np.empty(n, np.float64))
        beta[i] = b
        sum_p[i] = s
        row_total[i] = prow.sum()
        C[i, :] = prow


@njit(parallel=True, cache=True)
def symmetrize(C, total, P):
    """P <- max((C + C.T) / total, eps) off the diagonal, 0 on it, stored as P's dtype
    (float32: the product of two probabilities is never needed beyond 7 digits)."""
    n = C.shape[0]
    for i in prange(n):
        for j in range(n):
            P[i, j] = max((C[i, j] + C[j, i]) / total, MACHINE_EPSILON) if j != i else 0.0


@njit(cache=True, fastmath=PAIR_FASTMATH)
def _joint_row(X, i, beta, sum_p, total, dist, prow):
    """Row i of the joint P computed on the fly, exactly as the dense path stores it."""
    n = X.shape[0]
    _sq_distances_row(X, i, dist)
    pij = np.empty(n, np.float64)
    pji = np.empty(n, np.float64)
    buf = np.empty(n, np.float64)
    for j in range(n):
        pij[j] = -np.float64(dist[j]) * beta[i]
        pji[j] = -np.float64(dist[j]) * beta[j]
    exp_nonpositive(pij, pij, buf)
    exp_nonpositive(pji, pji, buf)
    for j in range(n):
        prow[j] = max((pij[j] / sum_p[i] + pji[j] / sum_p[j]) / total, MACHINE_EPSILON)
    prow[i] = 0.0


@njit(parallel=True, cache=True)
def joint_matrix(X, beta, sum_p, total, out):
    """All rows of the joint P into ``out`` (float32 [N, N]): the dense P, built from
    the precisions without an N x N float64 conditional matrix."""
    n = X.shape[0]
    for i in prange(n):
        _joint_row(X, i, beta, sum_p, total, np.empty(n, np.float32), out[i])


@njit(cache=True, fastmath=PAIR_FASTMATH, inline="always")
def _point_sums(p0, p1, y0, y1, prow):
    """Sums over j of w, p*w*(p-yj) and w^2*(p-yj), with w = 1 / (1 + |p-yj|^2)."""
    n = y0.shape[0]
    sw = 0.0
    a0 = 0.0
    a1 = 0.0
    r0 = 0.0
    r1 = 0.0
    for j in range(n):
        d0 = p0 - y0[j]
        d1 = p1 - y1[j]
        w = 1.0 / (1.0 + d0 * d0 + d1 * d1)
        pw = prow[j] * w
        ww = w * w
        sw += w
        a0 += pw * d0
        a1 += pw * d1
        r0 += ww * d0
        r1 += ww * d1
    return sw, a0, a1, r0, r1


@njit(cache=True, fastmath=PAIR_FASTMATH)
def _pair_sums(i, y0, y1, prow):
    """_point_sums for embedded point i against all points, leaving out j == i."""
    sw, a0, a1, r0, r1 = _point_sums(y0[i], y1[i], y0, y1, prow)
    return sw - 1.0, a0, a1, r0, r1  # j == i contributed w = 1 and nothing else


@njit(cache=True, fastmath=PAIR_FASTMATH)
def _log_sum(i, y0, y1, prow):
    """Sum over j of p_ij * log(1 + |yi-yj|^2)  (= -p log w, for the KL divergence)."""
    n = y0.shape[0]
    s = 0.0
    for j in range(n):
        d0 = y0[i] - y0[j]
        d1 = y1[i] - y1[j]
        s += prow[j] * math.log(1.0 + d0 * d0 + d1 * d1)  # 5x cheaper than log1p
    return s


@njit(parallel=True, cache=True)
def gradient_terms(y0, y1, P, X, beta, sum_p, total, with_kl, sw, attr, rep, kl_rows):
    """Per-row sums for the exact gradient (and KL when asked), from a dense P or, when P
    is a (0, 0) placeholder, from P rows recomputed on the fly."""
    n = y0.shape[0]
    dense = P.shape[0] == n
    for i in prange(n):
        if dense:
            prow = P[i]
        else:
            prow = np.empty(n, P.dtype)
            _joint_row(X, i, beta, sum_p, total, np.empty(n, np.float32), prow)
        s, a0, a1, r0, r1 = _pair_sums(i, y0, y1, prow)
        sw[i] = s
        attr[0, i] = a0
        attr[1, i] = a1
        rep[0, i] = r0
        rep[1, i] = r1
        if with_kl:
            kl_rows[i] = _log_sum(i, y0, y1, prow)


@njit(cache=True)
def descent_step(Y, sw, attr, rep, exaggeration, update, gains, momentum, learning_rate,
                 min_gain):
    """One step of scikit-learn's update from the row sums; returns (Z, |grad|).

    grad = 4 (exaggeration * attr - rep / Z); gains +0.2 where update and grad disagree
    in sign, else x0.8, floored at min_gain; update = momentum * update - lr * gains *
    grad; Y += update. The norm is of the gain-scaled gradient, as scikit-learn reports.
    """
    n = sw.shape[0]
    z = 0.0
    for i in range(n):
        z += sw[i]
    norm2 = 0.0
    for c in range(2):
        for i in range(n):
            g = 4.0 * (exaggeration * attr[c, i] - rep[c, i] / z)
            if update[c, i] * g < 0.0:
                gains[c, i] += 0.2
            else:
                gains[c, i] *= 0.8
            if gains[c, i] < min_gain:
                gains[c, i] = min_gain
            g *= gains[c, i]
            norm2 += g * g
            update[c, i] = momentum * update[c, i] - learning_rate * g
            Y[c, i] += update[c, i]
    return z, math.sqrt(norm2)


@njit(parallel=True, cache=True)
def p_log_p(P, X, beta, sum_p, total, out):
    """Per-row sums of p and p*log(p) over j != i (the constant parts of the KL)."""
    n = X.shape[0]
    for i in prange(n):
        if P.shape[0] == n:
            prow = P[i]
        else:
            prow = np.empty(n, P.dtype)
            _joint_row(X, i, beta, sum_p, total, np.empty(n, np.float32), prow)
        s = 0.0
        t = 0.0
        for j in range(n):
            if j != i:
                p = np.float64(prow[j])
                s += p
                t += p * math.log(p)
        out[0, i] = s
        out[1, i] = t


@njit(parallel=True, cache=True, fastmath=PAIR_FASTMATH)
def place_points(X_new, X_ref, y0, y1, init, log_perplexity, n_iter, learning_rate,
                 exaggeration, momentum, max_grad_norm, min_gain, out):
    """Optimize each new point alone against the fixed reference embedding (y0, y1).

    Point k gets a perplexity-calibrated conditional P over all reference points (each
    row sums to 1), then ``n_iter`` steps of gradient descent with gains and momentum on
    exaggeration * attraction - repulsion / Z_k, with Z_k its own normalizer and the
    gradient clipped to ``max_grad_norm`` (openTSNE's transform semantics, computed exactly).
    """
    m = X_new.shape[0]
    n = X_ref.shape[0]
    for k in prange(m):
        dist = np.empty(n, np.float32)
        prow = np.empty(n, np.float64)
        _sq_distances_to(X_new[k], X_ref, dist)
        _search_beta(dist, -1, log_perplexity, prow, np.empty(n, np.float64))
        p0 = init[k, 0]
        p1 = init[k, 1]
        u0 = 0.0
        u1 = 0.0
        g0s = 1.0
        g1s = 1.0
        for _ in range(n_iter):
            sw, a0, a1, r0, r1 = _point_sums(p0, p1, y0, y1, prow)
            g0 = exaggeration * a0 - r0 / sw
            g1 = exaggeration * a1 - r1 / sw
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
        out[k, 0] = p0
        out[k, 1] = p1

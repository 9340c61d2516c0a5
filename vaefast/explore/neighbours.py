"""A row's nearest neighbours in μ space and in the 2-D map, side by side: where t-SNE
distorts, the two lists differ. Exact search, a row chunk at a time (O(chunk) memory)."""

from __future__ import annotations

import numpy as np

from vaefast.explore.columns import Columns


def _nearest(dist: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances and their rows, nearest first (ties by row)."""
    k = min(k, len(dist))
    part = np.argpartition(dist, k - 1)[:k] if k else np.zeros(0, int)
    order = np.lexsort((rows[part], dist[part]))
    return dist[part][order], rows[part][order]


def in_latent(cols: Columns, r: int, k: int) -> list[int]:
    """The ``k`` rows nearest to row ``r`` in μ space (Euclidean; ``r`` itself and
    skipped rows excluded)."""
    q = cols.mu_rows(slice(r, r + 1))[0].astype(np.float64)
    best_d, best_r = np.zeros(0), np.zeros(0, np.int64)
    for start, stop in cols.chunks():
        mu = cols.mu_rows(slice(start, stop)).astype(np.float64)
        d = ((mu - q) ** 2).sum(axis=1)
        rows = np.arange(start, stop)
        ok = cols.drawn[start:stop] & (rows != r)
        d, rows = np.concatenate([best_d, d[ok]]), np.concatenate([best_r, rows[ok]])
        best_d, best_r = _nearest(d, rows, k)
    return best_r.tolist()


def in_map(cols: Columns, name: str, r: int, k: int) -> list[int]:
    """The ``k`` rows nearest to row ``r`` in map ``name``."""
    xy = cols.positions(name)
    ok = cols.drawn.copy()
    ok[r] = False
    rows = np.flatnonzero(ok)
    d = ((xy[rows] - xy[r]) ** 2).sum(axis=1)
    return _nearest(d, rows, k)[1].tolist()

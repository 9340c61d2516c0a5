"""Numba-accelerated exact t-SNE: scikit-learn's exact method, fast, in O(N) memory."""

from __future__ import annotations

import numpy as np

from vaefast.tsne._estimator import TSNE
from vaefast.tsne.affinities import joint_probabilities

__all__ = ["TSNE", "joint_probabilities", "map_points"]


def map_points(X: np.ndarray, max_exact: int = 10000, seed: int = 0) -> np.ndarray:
    """2-D map of X: exact t-SNE of all rows up to ``max_exact``; above, exact t-SNE of a
    seeded sample of that size with every other row placed by ``transform``."""
    X = np.asarray(X)
    if len(X) <= max_exact:
        return TSNE(random_state=seed, perplexity=min(30.0, (len(X) - 1) / 3)).fit_transform(X)
    reference = np.sort(np.random.default_rng(seed).choice(len(X), max_exact, replace=False))
    tsne = TSNE(random_state=seed).fit(X[reference])
    out = np.empty((len(X), 2))
    out[reference] = tsne.embedding_
    others = np.setdiff1d(np.arange(len(X)), reference)
    out[others] = tsne.transform(X[others])
    return out

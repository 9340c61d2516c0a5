"""Numba's cache, filled once before the suite's processes need it.

On a fresh clone every t-SNE kernel is compiled on first use: ~45 s of CPU on these
machines for one fit and one placement, in *every* process that gets there before the
cache holds them — both xdist workers and the CLI processes that tests start. ``make test``
runs this module in the background as the session starts (``tests/conftest.py``), beside
the first files (which build and export models), so that the rest load the kernels.
Every call is the public API on tiny inputs, in the dtypes and paths the suite runs.
"""

from __future__ import annotations

import sys

import numpy as np


def warm() -> None:
    """Compile (into Numba's cache) the kernels of every t-SNE fit and placement path."""
    from scipy.spatial.distance import pdist, squareform

    from vaefast.tsne import TSNE, map_points, transform
    from vaefast.tsne.affinities import GEMM_MIN_FEATURES

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    fit = dict(perplexity=5, max_iter=250, random_state=0)
    Y = TSNE(**fit).fit_transform(X)  # P stored
    TSNE(**fit, max_dense_bytes=0).fit(X)  # P recomputed on the fly
    TSNE(**fit, n_components=3, init="random").fit(X.astype(np.float64))
    TSNE(**fit, metric="precomputed", init="random").fit(squareform(pdist(X)))
    for method in transform.PLACEMENTS:
        transform.place(X[:8], X, Y, method=method)
    wide = rng.normal(size=(40, GEMM_MIN_FEATURES)).astype(np.float32)  # distances by GEMM
    transform.place(wide[:8], wide, TSNE(**fit).fit_transform(wide))
    map_points(rng.normal(size=(400, 5)), max_exact=300)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # the pid of the pytest session this serves: ends with it
        from vaefast.lifeline import die_with_parent

        die_with_parent(int(sys.argv[1]))
    warm()

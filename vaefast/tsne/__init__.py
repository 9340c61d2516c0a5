"""Numba-accelerated exact t-SNE: scikit-learn's exact method, fast, in O(N) memory.

Takes arrays, returns arrays: nothing here reads files or knows about stores (readers
live in ``vaefast.data``).
"""

import os

# Numba's OpenMP threads spin 300,000 rounds at every barrier before sleeping; beside a busy
# neighbour process that spinning steals the cores the other thread needs. 10,000 rounds
# cost nothing measurable alone (N=2,000: 1.41 vs 1.35 s) and keep n_jobs=2 within 1.2x
# of n_jobs=1 under contention (with ThreadPolicy). Set before the pool starts; a value
# the user set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from vaefast.tsne.affinities import joint_probabilities  # noqa: E402
from vaefast.tsne.mapping import map_points  # noqa: E402

__all__ = ["TSNE", "joint_probabilities", "map_points"]


def __getattr__(name: str):
    """``TSNE`` on first use: the estimator imports scikit-learn, which maps never need
    (``vaefast.tsne.fit``)."""
    if name == "TSNE":
        from vaefast.tsne.estimator import TSNE

        return TSNE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

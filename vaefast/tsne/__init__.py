"""Numba-accelerated exact t-SNE: scikit-learn's exact method, fast, in O(N) memory.

Takes arrays, returns arrays: nothing here reads files or knows about stores (readers
live in ``vaefast.data``).
"""

from vaefast.tsne.affinities import joint_probabilities
from vaefast.tsne.estimator import TSNE
from vaefast.tsne.mapping import map_points

__all__ = ["TSNE", "joint_probabilities", "map_points"]

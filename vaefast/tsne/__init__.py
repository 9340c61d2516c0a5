"""Numba-accelerated exact t-SNE: scikit-learn's exact method, fast, in O(N) memory."""

from vaefast.tsne._estimator import TSNE
from vaefast.tsne.affinities import joint_probabilities

__all__ = ["TSNE", "joint_probabilities"]

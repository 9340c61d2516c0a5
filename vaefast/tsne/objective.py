"""The t-SNE objective: KL(P || Q) of an embedding and its gradient, nothing else.

As scikit-learn's ``_kl_divergence`` is to its ``_gradient_descent``: the optimizer
(``vaefast.tsne.optimizer``) owns momentum, gains and the stopping rules and asks this
only for the value and the gradient. Q uses scikit-learn's kernel, a Student-t with
``dims - 1`` degrees of freedom (Cauchy in 2-D; one component is fitted as the 2-D
problem with the second coordinate at 0), and its gradient constant.
"""

from __future__ import annotations

import math

import numpy as np

from vaefast.tsne.affinities import Affinities
from vaefast.tsne.backends import kernels


class KLObjective:
    """KL(P || Q) of an embedding Y [dims, N] float32 (dims 2 or 3, the optimizer's state
    as scikit-learn keeps it) and its float32 gradient, with P scaled by
    ``exaggeration``."""

    def __init__(self, affinities: Affinities, dims: int = 2):
        if dims not in (2, 3):
            raise ValueError(f"the t-SNE kernels embed in 2 or 3 dimensions, not {dims}")
        self.affinities = affinities
        self.kernels = kernels(affinities.backend)
        n = affinities.n
        dof = dims - 1
        self.scale = 2.0 * (dof + 1.0) / dof  # scikit-learn's gradient constant
        self.kl_rows = np.empty(n)
        self.grad = np.empty((dims, n), np.float32)
        self.workspace = self.kernels.gradient_workspace(n, dims)
        self.args = affinities.kernel_args()
        self.sum_p, self.sum_p_log_p = self.kernels.p_sums(*self.args)

    def __call__(
        self, Y: np.ndarray, exaggeration: float = 1.0, compute_error: bool = True
    ) -> tuple[float, np.ndarray]:
        """(KL divergence, or NaN when not asked for; gradient [dims, N]) at Y. The
        gradient is a buffer this objective reuses at its next call."""
        if Y.dtype != np.float32:
            raise TypeError(f"the embedding must be float32 [dims, N], got {Y.dtype}")
        z = self.kernels.gradient(
            Y,
            *self.args,
            float(exaggeration),  # one compiled signature, whatever number type is given
            self.scale,
            compute_error,
            *self.workspace,
            self.grad,
            self.kl_rows,
        )
        if not compute_error:
            return math.nan, self.grad
        a = exaggeration
        kl = a * (
            self.sum_p_log_p
            + (math.log(a) + math.log(z)) * self.sum_p
            + float(np.sum(self.kl_rows))
        )
        return kl, self.grad

"""scikit-learn's gradient descent for t-SNE (momentum, gains), on the exact Numba gradient.

``_gradient_descent`` in sklearn/manifold/_t_sne.py, step for step: gains +0.2 where the
update and gradient disagree in sign, x0.8 elsewhere, floor ``min_gain``; the error and
gradient norm are checked every ``n_iter_check`` iterations and on the last one.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from vaefast.tsne.affinities import Affinities
from vaefast.tsne.backends import kernels
from vaefast.tsne.threads import ThreadPolicy

Callback = Callable[[int, float, float], object]


class KLObjective:
    """KL(P || Q) of an embedding [dims, N] and its gradient, with P scaled by
    ``exaggeration``. Q uses scikit-learn's kernel: Student-t with max(dims - 1, 1)
    degrees of freedom (Cauchy in 1-D and 2-D)."""

    def __init__(self, affinities: Affinities, dims: int = 2):
        if dims not in (2, 3):
            raise ValueError(f"the t-SNE kernels embed in 2 or 3 dimensions, not {dims}")
        self.affinities = affinities
        self.kernels = kernels(affinities.backend)
        n = affinities.n
        self.n = n
        dof = dims - 1
        self.scale = 2.0 * (dof + 1.0) / dof  # scikit-learn's gradient constant
        self.sw = np.empty(n)
        self.attr = np.empty((dims, n))
        self.rep = np.empty((dims, n))
        self.kl_rows = np.empty(n)
        self.workspace = self.kernels.gradient_workspace(n, dims)
        sums = np.empty((2, self.kernels.BUILD_PARTS))
        self.kernels.p_log_p(*affinities.kernel_args(), sums)
        self.sum_p = float(np.sum(sums[0]))
        self.sum_p_log_p = float(np.sum(sums[1]))

    def terms(self, Y: np.ndarray, compute_error: bool) -> None:
        """Fill the per-row sums (and KL rows) for the embedding Y [dims, N]."""
        self.kernels.gradient_terms(Y, *self.affinities.kernel_args(), compute_error,
                                    *self.workspace, self.sw, self.attr, self.rep,
                                    self.kl_rows)

    def step(self, Y: np.ndarray, exaggeration: float, update: np.ndarray, gains: np.ndarray,
             momentum: float, learning_rate: float, min_gain: float) -> tuple[float, float]:
        """One descent step from the last ``terms`` call, in place; return (Z, |grad|)."""
        return self.kernels.descent_step(Y, self.sw, self.attr, self.rep, exaggeration, update,
                                         gains, momentum, learning_rate, min_gain, self.scale)

    def kl(self, z: float, exaggeration: float) -> float:
        """KL divergence from the last ``terms`` call with KL rows, given Z = sum of w."""
        a = exaggeration
        return a * (self.sum_p_log_p + (math.log(a) + math.log(z)) * self.sum_p
                    + float(np.sum(self.kl_rows)))

    def __call__(self, Y: np.ndarray, exaggeration: float = 1.0,
                 compute_error: bool = True) -> tuple[float, np.ndarray]:
        """(KL divergence or NaN, gradient [dims, N]) at the embedding Y [dims, N]."""
        self.terms(Y, compute_error)
        z = float(np.sum(self.sw))
        grad = self.scale * (exaggeration * self.attr - self.rep / z)
        return (self.kl(z, exaggeration) if compute_error else math.nan), grad


def gradient_descent(objective: KLObjective, Y: np.ndarray, it: int, max_iter: int, *,
                     exaggeration: float, momentum: float, learning_rate: float,
                     n_iter_without_progress: int, min_grad_norm: float,
                     min_gain: float = 0.01, n_iter_check: int = 50, verbose: int = 0,
                     callbacks: Sequence[Callback] = (), on_check=None,
                     threads: ThreadPolicy | None = None) -> tuple[np.ndarray, float, int, bool]:
    """Run iterations ``it`` .. ``max_iter - 1``; return (Y, error, last iteration, stopped).

    ``stopped`` is True when a callback asked to stop. ``Y`` is [dims, N] and is updated
    in place; each iteration is one parallel gradient kernel and one fused update.
    ``threads`` picks the thread count of each gradient kernel by measured time.
    """
    update = np.zeros_like(Y)
    gains = np.ones_like(Y)
    error = best_error = np.finfo(float).max
    best_iter = i = it
    tic = time.perf_counter()
    for i in range(it, max_iter):
        check = (i + 1) % n_iter_check == 0
        with_error = check or i == max_iter - 1
        if threads is None:
            objective.terms(Y, with_error)
        else:
            threads.call(lambda: objective.terms(Y, with_error))
        z, grad_norm = objective.step(Y, exaggeration, update, gains, momentum,
                                      learning_rate, min_gain)
        if with_error:
            error = objective.kl(z, exaggeration)
        if check:
            toc = time.perf_counter()
            if verbose >= 2:  # scikit-learn's lines, word for word
                print("[t-SNE] Iteration %d: error = %.7f, gradient norm = %.7f (%s iterations "
                      "in %0.3fs)" % (i + 1, error, grad_norm, n_iter_check, toc - tic))
            tic = toc
            if on_check is not None:
                on_check(i + 1)
            if any(cb(i + 1, error, grad_norm) for cb in callbacks):
                return Y, error, i, True
            if error < best_error:
                best_error, best_iter = error, i
            elif i - best_iter > n_iter_without_progress:
                if verbose >= 2:
                    print("[t-SNE] Iteration %d: did not make any progress during the last %d "
                          "episodes. Finished." % (i + 1, n_iter_without_progress))
                break
            if grad_norm <= min_grad_norm:
                if verbose >= 2:
                    print("[t-SNE] Iteration %d: gradient norm %f. Finished." % (i + 1, grad_norm))
                break
    return Y, error, i, False

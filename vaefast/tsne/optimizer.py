"""scikit-learn's gradient descent for t-SNE: momentum, gains and the stopping rules.

``_gradient_descent`` in sklearn/manifold/_t_sne.py, step for step: gains +0.2 where the
update and gradient disagree in sign, x0.8 elsewhere, floor ``min_gain``; the error and
gradient norm are checked every ``n_iter_check`` iterations and on the last one. The
objective (``vaefast.tsne.objective``) only returns the value and the gradient; the
optimizer's state (``update``, ``gains``) lives in ``Descent``. Like scikit-learn, each
phase of a fit (early exaggeration, then the rest) starts from a fresh one; a finished
fit keeps only its embedding, so a fit cannot be continued (openTSNE's can).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from vaefast.tsne.backends import DEFAULT, kernels
from vaefast.tsne.threads import ThreadPolicy

Callback = Callable[[int, float, float], object]
Objective = Callable[[np.ndarray, float, bool], tuple[float, np.ndarray]]


@dataclass
class Descent:
    """The optimizer's state for an embedding [dims, N]: the last update and the gains."""

    update: np.ndarray
    gains: np.ndarray
    backend: str = DEFAULT
    _kernels: object = field(default=None, repr=False)

    @classmethod
    def start(cls, Y: np.ndarray, backend: str = DEFAULT) -> "Descent":
        return cls(np.zeros_like(Y), np.ones_like(Y), backend)

    def step(
        self,
        Y: np.ndarray,
        grad: np.ndarray,
        momentum: float,
        learning_rate: float,
        min_gain: float,
    ) -> float:
        """Move Y (in place) by one step along ``grad``; return |gains * grad|."""
        if self._kernels is None:
            self._kernels = kernels(self.backend)
        return self._kernels.descent_update(  # floats: one compiled signature for any input
            Y, grad, self.update, self.gains, float(momentum), float(learning_rate), float(min_gain)
        )


def gradient_descent(
    objective: Objective,
    Y: np.ndarray,
    it: int,
    max_iter: int,
    *,
    exaggeration: float,
    momentum: float,
    learning_rate: float,
    n_iter_without_progress: int,
    min_grad_norm: float,
    min_gain: float = 0.01,
    n_iter_check: int = 50,
    verbose: int = 0,
    callbacks: Sequence[Callback] = (),
    on_check=None,
    threads: ThreadPolicy | None = None,
    state: Descent | None = None,
) -> tuple[np.ndarray, float, int, bool]:
    """Run iterations ``it`` .. ``max_iter - 1``; return (Y, error, last iteration, stopped).

    ``objective(Y, exaggeration, compute_error)`` returns (KL or NaN, gradient).
    ``stopped`` is True when a callback asked to stop. ``Y`` is [dims, N] and is updated
    in place; ``state`` carries update and gains across calls (a fresh one by default,
    as scikit-learn starts each phase). ``threads`` picks the thread count of each
    objective evaluation by measured time.
    """
    state = state or Descent.start(Y)
    error = best_error = np.finfo(float).max
    best_iter = i = it
    tic = time.perf_counter()
    for i in range(it, max_iter):
        check = (i + 1) % n_iter_check == 0
        with_error = check or i == max_iter - 1
        if threads is None:
            kl, grad = objective(Y, exaggeration, with_error)
        else:
            kl, grad = threads.call(
                lambda: objective(Y, exaggeration, with_error), measure=not with_error
            )
        grad_norm = state.step(Y, grad, momentum, learning_rate, min_gain)
        if with_error:
            error = kl
        if check:
            toc = time.perf_counter()
            if verbose >= 2:  # scikit-learn's lines, word for word
                print(
                    "[t-SNE] Iteration %d: error = %.7f, gradient norm = %.7f (%s iterations "
                    "in %0.3fs)" % (i + 1, error, grad_norm, n_iter_check, toc - tic)
                )
            tic = toc
            if on_check is not None:
                on_check(i + 1)
            if any(cb(i + 1, error, grad_norm) for cb in callbacks):
                return Y, error, i, True
            if error < best_error:
                best_error, best_iter = error, i
            elif i - best_iter > n_iter_without_progress:
                if verbose >= 2:
                    print(
                        "[t-SNE] Iteration %d: did not make any progress during the last %d "
                        "episodes. Finished." % (i + 1, n_iter_without_progress)
                    )
                break
            if grad_norm <= min_grad_norm:
                if verbose >= 2:
                    print("[t-SNE] Iteration %d: gradient norm %f. Finished." % (i + 1, grad_norm))
                break
    return Y, error, i, False


EXPLORATION_MAX_ITER = 250  # iterations with early exaggeration and momentum 0.5
N_ITER_CHECK = 50  # iterations between error checks


PREPARING = "t-SNE (preparing kernels: compiled on a first run, then cached)"


def optimize(
    objective: Objective,
    Y: np.ndarray,
    *,
    learning_rate: float,
    early_exaggeration: float = 12.0,
    max_iter: int = 1000,
    n_iter_without_progress: int = 300,
    min_grad_norm: float = 1e-7,
    threads: ThreadPolicy | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
    verbose: int = 0,
    backend: str = DEFAULT,
    exploration_iter: int = EXPLORATION_MAX_ITER,
    n_iter_check: int = N_ITER_CHECK,
) -> tuple[np.ndarray, float, int]:
    """scikit-learn's two phases (``TSNE._tsne``): ``exploration_iter`` iterations with
    early exaggeration and momentum 0.5, then the rest at momentum 0.8, each phase from
    zero update and unit gains. Returns (Y, KL, index of the last iteration)."""
    from tqdm.auto import tqdm

    # until the first check, the kernels may be compiling (a first run: tens of seconds)
    bar = tqdm(total=max_iter, desc=PREPARING, unit="it", disable=not progress)
    done = [0]

    def on_check(iteration: int) -> None:
        if not done[0]:
            bar.set_description("t-SNE", refresh=False)
        bar.update(iteration - done[0])
        done[0] = iteration

    common = dict(
        learning_rate=learning_rate,
        min_grad_norm=min_grad_norm,
        threads=threads,
        n_iter_check=n_iter_check,
        verbose=verbose,
        callbacks=callbacks,
        on_check=on_check,
    )
    try:
        Y, kl, it, stopped = gradient_descent(
            objective,
            Y,
            0,
            exploration_iter,
            exaggeration=early_exaggeration,
            momentum=0.5,
            n_iter_without_progress=exploration_iter,
            state=Descent.start(Y, backend),
            **common,
        )
        if verbose:
            print(
                "[t-SNE] KL divergence after %d iterations with early exaggeration: %f"
                % (it + 1, kl)
            )
        if not stopped and (it < exploration_iter or max_iter > exploration_iter):
            Y, kl, it, stopped = gradient_descent(
                objective,
                Y,
                it + 1,
                max_iter,
                exaggeration=1.0,
                momentum=0.8,
                n_iter_without_progress=n_iter_without_progress,
                state=Descent.start(Y, backend),
                **common,
            )
    finally:
        bar.close()
    return Y, kl, it

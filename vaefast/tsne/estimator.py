"""The TSNE estimator: scikit-learn's exact t-SNE, parameter for parameter, on Numba kernels."""

from __future__ import annotations

import time
import warnings
from typing import Sequence

import numpy as np

from vaefast.errors import VaefastError
from vaefast.tsne.affinities import DEFAULT_MAX_DENSE_BYTES, joint_probabilities
from vaefast.tsne.optimizer import Callback, KLObjective, gradient_descent
from vaefast.tsne.threads import ThreadPolicy, numba_threads
from vaefast.tsne.transform import place

EXPLORATION_ITER = 250  # iterations with early exaggeration and momentum 0.5


def check_points(X, name: str = "X") -> np.ndarray:
    """A finite 2-D float array with at least 2 rows, or a clear error."""
    X = np.asarray(X)
    if X.dtype.kind not in "iuf":
        raise VaefastError(f"{name} must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise VaefastError(f"{name} must be 2-D [n_samples, n_features], got shape {X.shape}")
    if X.shape[0] < 2:
        raise VaefastError(f"{name} needs at least 2 points, got {X.shape[0]}")
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise VaefastError(f"{name} contains NaN or inf")
    return X


class TSNE:
    """Exact t-SNE with scikit-learn's parameters, defaults and semantics, computed by Numba.

    Every pair contributes to attraction and repulsion (no Barnes-Hut, FFT or kNN
    truncation). P is dense while ``8 N^2`` bytes fit ``max_dense_bytes``, else
    recomputed exactly on the fly so memory stays O(N D). Results are bit-identical
    for a given ``random_state`` whatever ``n_jobs`` is.

    Parameters follow ``sklearn.manifold.TSNE(method="exact")``; in addition
    ``n_jobs`` sets Numba's threads, ``progress`` shows a progress bar, and each of
    ``callbacks`` is called as ``cb(iteration, kl, grad_norm)`` every 50 iterations —
    a truthy return stops the run.

    Attributes: ``embedding_`` [N, 2], ``kl_divergence_``, ``n_iter_`` (index of the
    last iteration, as scikit-learn counts), ``learning_rate_``, ``timings_``.
    """

    def __init__(self, n_components: int = 2, *, perplexity: float = 30.0,
                 early_exaggeration: float = 12.0, learning_rate: float | str = "auto",
                 max_iter: int = 1000, n_iter_without_progress: int = 300,
                 min_grad_norm: float = 1e-7, init: str | np.ndarray = "pca",
                 random_state: int | np.random.RandomState | None = None, verbose: int = 0,
                 n_jobs: int | None = None, progress: bool = False,
                 callbacks: Sequence[Callback] = (),
                 max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES):
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.n_iter_without_progress = n_iter_without_progress
        self.min_grad_norm = min_grad_norm
        self.init = init
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.progress = progress
        self.callbacks = callbacks
        self.max_dense_bytes = max_dense_bytes

    # --- validation -------------------------------------------------------------------

    def _validate(self, X) -> np.ndarray:
        if self.n_components != 2:
            raise VaefastError(f"n_components={self.n_components} is not supported; vaefast's "
                               "exact t-SNE embeds into 2 dimensions")
        X = check_points(X)
        n = X.shape[0]
        if not 0 < self.perplexity < n:
            raise VaefastError(f"perplexity ({self.perplexity}) must be positive and less "
                               f"than n_samples ({n})")
        if self.early_exaggeration < 1:
            raise VaefastError(f"early_exaggeration must be >= 1, got {self.early_exaggeration}")
        if not (self.learning_rate == "auto" or (isinstance(self.learning_rate, (int, float))
                                                 and self.learning_rate > 0)):
            raise VaefastError(f"learning_rate must be 'auto' or > 0, got {self.learning_rate!r}")
        if self.max_iter < 1:
            raise VaefastError(f"max_iter must be >= 1, got {self.max_iter}")
        if isinstance(self.init, str):
            if self.init not in ("pca", "random"):
                raise VaefastError(f"init must be 'pca', 'random' or an array, got {self.init!r}")
        else:
            init = np.asarray(self.init)
            if init.shape != (n, 2):
                raise VaefastError(f"init array has shape {init.shape}, expected ({n}, 2)")
            if not np.isfinite(init).all():
                raise VaefastError("init array contains NaN or inf")
        return X

    def _initial_embedding(self, X: np.ndarray) -> np.ndarray:
        from sklearn.utils import check_random_state

        random_state = check_random_state(self.random_state)
        if not isinstance(self.init, str):
            return np.asarray(self.init, dtype=np.float64)
        if self.init == "pca":
            from sklearn.decomposition import PCA

            pca = PCA(n_components=2, random_state=random_state)
            with warnings.catch_warnings():  # constant input: zero explained variance
                warnings.simplefilter("ignore", RuntimeWarning)
                Y = pca.fit_transform(X).astype(np.float32, copy=False)
            std = np.std(Y[:, 0])
            # constant input: no direction to follow; keep the (zero) PCA as is
            return (Y / std * 1e-4 if std > 0 else Y).astype(np.float64)
        return (1e-4 * random_state.standard_normal(size=(X.shape[0], 2)).astype(np.float32)
                ).astype(np.float64)

    # --- fitting ------------------------------------------------------------------------

    def fit(self, X, y=None) -> "TSNE":
        """Compute the embedding of X [N, D]; sets ``embedding_`` and friends."""
        X = self._validate(X)
        n = X.shape[0]
        self.n_features_in_ = X.shape[1]
        self.learning_rate_ = (max(n / self.early_exaggeration / 4, 50)
                               if self.learning_rate == "auto" else float(self.learning_rate))
        with numba_threads(self.n_jobs) as threads:
            t0 = time.perf_counter()
            affinities = joint_probabilities(X, self.perplexity, self.max_dense_bytes)
            objective = KLObjective(affinities)
            t1 = time.perf_counter()
            Y = np.ascontiguousarray(self._initial_embedding(X).T)
            policy = ThreadPolicy(threads)
            Y, kl, it = self._optimize(objective, Y, policy)
            t2 = time.perf_counter()
        self.embedding_ = np.ascontiguousarray(Y.T)
        self.kl_divergence_ = kl
        self.n_iter_ = it
        self._X_fit = X
        iterations = it + 1
        self.timings_ = {"affinities_s": t1 - t0, "optimize_s": t2 - t1,
                         "iterations": iterations, "dense_p": affinities.dense,
                         "pairs_per_s": n * (n - 1) * iterations / max(t2 - t1, 1e-12),
                         "iterations_by_threads": dict(policy.history)}
        if self.verbose:
            print(f"[t-SNE] KL divergence after {iterations} iterations: {kl:.6f}")
        return self

    def _optimize(self, objective: KLObjective, Y: np.ndarray,
                  policy: ThreadPolicy) -> tuple[np.ndarray, float, int]:
        from tqdm.auto import tqdm

        bar = tqdm(total=self.max_iter, desc="t-SNE", unit="it", disable=not self.progress)
        done = [0]

        def on_check(iteration: int) -> None:
            bar.update(iteration - done[0])
            done[0] = iteration

        common = dict(learning_rate=self.learning_rate_, min_grad_norm=self.min_grad_norm,
                      threads=policy,
                      verbose=self.verbose, callbacks=self.callbacks, on_check=on_check)
        explore = min(EXPLORATION_ITER, self.max_iter)
        try:
            Y, kl, it, stopped = gradient_descent(
                objective, Y, 0, explore, exaggeration=self.early_exaggeration, momentum=0.5,
                n_iter_without_progress=EXPLORATION_ITER, **common)
            if self.verbose:
                print(f"[t-SNE] KL divergence after {it + 1} iterations with early "
                      f"exaggeration: {kl:.6f}")
            if not stopped and (it < EXPLORATION_ITER or self.max_iter > EXPLORATION_ITER) \
                    and it + 1 < self.max_iter:
                Y, kl, it, stopped = gradient_descent(
                    objective, Y, it + 1, self.max_iter, exaggeration=1.0, momentum=0.8,
                    n_iter_without_progress=self.n_iter_without_progress, **common)
        finally:
            bar.close()
        return Y, kl, it

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit and return ``embedding_`` [N, 2]."""
        return self.fit(X).embedding_

    def transform(self, X_new, *, perplexity: float = 5.0, k: int = 25, n_iter: int = 250,
                  learning_rate: float = 0.1, exaggeration: float = 1.5, momentum: float = 0.8,
                  max_grad_norm: float = 0.25) -> np.ndarray:
        """Place new points into the fitted embedding, each independently, exactly.

        openTSNE's transform: affinities of each new point to all fitted points at
        ``perplexity`` (each row sums to 1), start at the median position of its ``k``
        nearest fitted points, then ``n_iter`` steps of gradient descent (gains,
        ``momentum``, ``learning_rate``; attraction scaled by ``exaggeration``; the
        gradient clipped to ``max_grad_norm``) with the fitted points held fixed.
        Returns [M, 2].
        """
        if not hasattr(self, "embedding_"):
            raise VaefastError("this TSNE is not fitted yet; call fit first")
        X_new = np.asarray(X_new)
        if X_new.ndim != 2 or X_new.shape[1] != self.n_features_in_:
            raise VaefastError(f"X_new has shape {X_new.shape}, expected "
                               f"[M, {self.n_features_in_}]")
        if X_new.shape[0] == 0:
            return np.empty((0, 2))
        X_new = check_points(np.concatenate([X_new, X_new[:1]]) if len(X_new) == 1 else X_new,
                             "X_new")[:len(X_new)]
        n = self._X_fit.shape[0]
        if not 0 < perplexity < n:
            raise VaefastError(f"perplexity ({perplexity}) must be positive and less than "
                               f"the {n} fitted points")
        with numba_threads(self.n_jobs):
            return place(X_new, self._X_fit, self.embedding_, perplexity=perplexity, k=k,
                         n_iter=n_iter, learning_rate=learning_rate, exaggeration=exaggeration,
                         momentum=momentum, max_grad_norm=max_grad_norm)

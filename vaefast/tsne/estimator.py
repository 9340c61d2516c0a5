"""The TSNE estimator: scikit-learn's exact t-SNE, parameter for parameter, on Numba kernels.

A scikit-learn estimator (``BaseEstimator``, ``TransformerMixin``): clone, get/set_params,
parameter constraints, ``set_output``, feature names; sparse input, every metric and
callable scikit-learn's exact method takes, and ``"precomputed"`` distances.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real
from typing import Callable, Sequence

import numpy as np

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.metrics.pairwise import _VALID_METRICS
from sklearn.utils._param_validation import Interval, StrOptions

from vaefast.errors import VaefastError
from vaefast.tsne.affinities import joint_probabilities, joint_probabilities_from_distances
from vaefast.tsne.backends import BACKENDS, DEFAULT
from vaefast.tsne.objective import KLObjective
from vaefast.tsne.optimizer import Callback, Descent, gradient_descent
from vaefast.tsne.threads import ThreadPolicy, numba_threads
from vaefast.tsne.transform import place


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


class TSNE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Exact t-SNE with scikit-learn's parameters, defaults and semantics, computed by Numba.

    Every pair contributes to attraction and repulsion (no Barnes-Hut, FFT or kNN
    truncation); each unordered pair is computed once per iteration. P is stored (float32
    upper triangle) while its ``2 N^2`` bytes fit ``max_dense_bytes`` (default None: half
    the memory available at fit time), else recomputed to the same bits on the fly so
    memory stays O(N D) (euclidean metric). Results are bit-identical for a given
    ``random_state`` whatever ``n_jobs`` is, stored P or not.

    Parameters follow ``sklearn.manifold.TSNE(method="exact")``: ``method`` accepts only
    "exact" (the error names what to use for Barnes-Hut); ``angle`` is accepted and unused
    (it belongs to Barnes-Hut); ``n_components`` is 1, 2 or 3 (in 3-D scikit-learn's
    Student-t kernel with 2 degrees of freedom, as it computes it). In addition
    ``n_jobs`` sets Numba's threads (a thread policy falls back to one thread while
    that is measured faster, e.g. beside a busy process), ``progress`` shows a progress
    bar, and each of ``callbacks`` is called as ``cb(iteration, kl, grad_norm)`` every 50
    iterations — a truthy return stops the run; ``backend`` names the kernel set
    (``vaefast.tsne.backends.BACKENDS``) that computes P, the objective and transform.

    Attributes: ``embedding_`` [N, n_components] float32, ``kl_divergence_``, ``n_iter_``
    (index of the last iteration, as scikit-learn counts), ``learning_rate_``,
    ``n_features_in_``, ``timings_``.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "perplexity": [Interval(Real, 0, None, closed="neither")],
        "early_exaggeration": [Interval(Real, 1, None, closed="left")],
        "learning_rate": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 250, None, closed="left")],
        "n_iter_without_progress": [Interval(Integral, -1, None, closed="left")],
        "min_grad_norm": [Interval(Real, 0, None, closed="left")],
        "metric": [StrOptions(set(_VALID_METRICS) | {"precomputed"}), callable],
        "metric_params": [dict, None],
        "init": [StrOptions({"pca", "random"}), np.ndarray],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "method": [StrOptions({"exact", "barnes_hut"})],
        "angle": [Interval(Real, 0, 1, closed="both")],
        "n_jobs": [None, Integral],
        "progress": ["boolean"],
        "callbacks": [list, tuple],
        "max_dense_bytes": [Interval(Integral, 0, None, closed="left"), None],
        "backend": [StrOptions(set(BACKENDS))],
    }
    _EXPLORATION_MAX_ITER = 250  # iterations with early exaggeration and momentum 0.5
    _N_ITER_CHECK = 50  # iterations between error checks

    def __init__(self, n_components: int = 2, *, perplexity: float = 30.0,
                 early_exaggeration: float = 12.0, learning_rate: float | str = "auto",
                 max_iter: int = 1000, n_iter_without_progress: int = 300,
                 min_grad_norm: float = 1e-7, metric: str | Callable = "euclidean",
                 metric_params: dict | None = None, init: str | np.ndarray = "pca",
                 verbose: int = 0, random_state: int | np.random.RandomState | None = None,
                 method: str = "exact", angle: float = 0.5, n_jobs: int | None = None,
                 progress: bool = False, callbacks: Sequence[Callback] = (),
                 max_dense_bytes: int | None = None, backend: str = DEFAULT):
        self.n_components = n_components
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.n_iter_without_progress = n_iter_without_progress
        self.min_grad_norm = min_grad_norm
        self.metric = metric
        self.metric_params = metric_params
        self.init = init
        self.verbose = verbose
        self.random_state = random_state
        self.method = method
        self.angle = angle
        self.n_jobs = n_jobs
        self.progress = progress
        self.callbacks = callbacks
        self.max_dense_bytes = max_dense_bytes
        self.backend = backend

    @property
    def _n_features_out(self) -> int:
        return self.n_components

    # --- validation -------------------------------------------------------------------

    def _validate(self, X) -> np.ndarray:
        """Check parameters (scikit-learn's constraints and errors) and X; return X as a
        float32/float64 array or sparse matrix."""
        from scipy.sparse import issparse
        from sklearn.utils.validation import check_non_negative, validate_data

        self._validate_params()
        if self.method != "exact":
            raise VaefastError(f"method={self.method!r}: vaefast computes the exact method "
                               "only; for Barnes-Hut use sklearn.manifold.TSNE("
                               "method='barnes_hut') or openTSNE.TSNE")
        if self.n_components > 3:
            raise VaefastError(f"n_components={self.n_components}: vaefast's exact t-SNE "
                               "embeds in 1 to 3 dimensions; use sklearn.manifold.TSNE("
                               "method='exact') for more")
        X = validate_data(self, X, accept_sparse=["csr", "csc", "coo"],
                          dtype=[np.float32, np.float64], ensure_min_samples=2)
        if self.metric == "precomputed":
            if isinstance(self.init, str) and self.init == "pca":
                raise ValueError('The parameter init="pca" cannot be used with '
                                 'metric="precomputed".')
            if X.shape[0] != X.shape[1]:
                raise ValueError("X should be a square distance matrix")
            check_non_negative(X, "TSNE.fit(). With metric='precomputed', X should contain "
                                  "positive distances.")
            if issparse(X):
                raise TypeError('TSNE with method="exact" does not accept sparse '
                                'precomputed distance matrix. Use method="barnes_hut" '
                                "or provide the dense distance matrix.")
        elif not issparse(X) and not np.isfinite(X).all():
            raise VaefastError("X contains NaN or inf")
        n = X.shape[0]
        if self.perplexity >= n:
            raise ValueError(f"perplexity ({self.perplexity}) must be less than n_samples "
                             f"({n})")
        if isinstance(self.init, np.ndarray):
            if self.init.shape != (n, self.n_components):
                raise ValueError(f"init array has shape {self.init.shape}, expected "
                                 f"({n}, {self.n_components})")
            if not np.isfinite(self.init).all():
                raise VaefastError("init array contains NaN or inf")
        return X

    def _blas_threads(self) -> int | None:
        """BLAS threads for the distance GEMMs: ``n_jobs``, or numpy's default."""
        return None if self.n_jobs in (None, -1) else int(self.n_jobs)

    def _affinities(self, X):
        """P for X under the chosen metric (the fast, memory-bounded path for dense
        euclidean input; scikit-learn's pairwise distances otherwise)."""
        from scipy.sparse import issparse

        if self.metric == "euclidean" and not issparse(X):
            return joint_probabilities(X, self.perplexity, self.max_dense_bytes,
                                       backend=self.backend, verbose=self.verbose,
                                       n_jobs=self._blas_threads())
        from sklearn.metrics import pairwise_distances

        if self.metric == "precomputed":
            distances = X
        else:
            if self.verbose:
                print("[t-SNE] Computing pairwise distances...")
            if self.metric == "euclidean":
                distances = pairwise_distances(X, metric="euclidean", squared=True)
            else:
                distances = pairwise_distances(X, metric=self.metric, n_jobs=self.n_jobs,
                                               **(self.metric_params or {}))
        if np.any(distances < 0):
            raise ValueError("All distances should be positive, the metric given is not "
                             "correct")
        distances = np.asarray(distances, dtype=np.float64)
        if self.metric != "euclidean":
            distances = distances ** 2
        return joint_probabilities_from_distances(distances, self.perplexity,
                                                  backend=self.backend, verbose=self.verbose)

    def _initial_embedding(self, X) -> np.ndarray:
        """[N, n_components] start, as scikit-learn makes it (float32 values)."""
        from sklearn.decomposition import PCA
        from sklearn.utils import check_random_state

        random_state = check_random_state(self.random_state)
        k = self.n_components
        if isinstance(self.init, np.ndarray):
            return np.asarray(self.init, dtype=np.float64)
        if self.init == "pca":
            from threadpoolctl import threadpool_limits

            pca = PCA(n_components=k, random_state=random_state)
            pca.set_output(transform="default")  # numpy whatever the global output is
            # One BLAS thread: OpenBLAS's idle threads spin for ~0.1 s after a threaded
            # call and would take a core from the first ~50 iterations (4x slower each).
            with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
                warnings.simplefilter("ignore", RuntimeWarning)  # constant input
                Y = pca.fit_transform(X).astype(np.float32, copy=False)
            std = np.std(Y[:, 0])
            # constant input: no direction to follow; keep the (zero) PCA as is
            return (Y / std * 1e-4 if std > 0 else Y).astype(np.float64)
        return (1e-4 * random_state.standard_normal(size=(X.shape[0], k)).astype(np.float32)
                ).astype(np.float64)

    # --- fitting ------------------------------------------------------------------------

    def fit(self, X, y=None) -> "TSNE":
        """Compute the embedding of X [N, D] (or [N, N] distances with
        ``metric="precomputed"``); sets ``embedding_`` and friends."""
        X = self._validate(X)
        n = X.shape[0]
        self.learning_rate_ = (max(n / self.early_exaggeration / 4, 50)
                               if self.learning_rate == "auto" else float(self.learning_rate))
        with numba_threads(self.n_jobs) as threads:
            t0 = time.perf_counter()
            affinities = self._affinities(X)
            # the kernels work in 2-D or 3-D; one component is the 2-D problem with y1 = 0
            dims = max(self.n_components, 2)
            objective = KLObjective(affinities, dims)
            t1 = time.perf_counter()
            start = self._initial_embedding(X)
            Y = np.zeros((dims, n), np.float32)  # scikit-learn's float32 state
            Y[:self.n_components] = start.T
            policy = ThreadPolicy(threads)
            Y, kl, it = self._optimize(objective, Y, policy)
            t2 = time.perf_counter()
        self.embedding_ = np.ascontiguousarray(Y[:self.n_components].T, dtype=np.float32)
        self.kl_divergence_ = kl
        self.n_iter_ = it
        self._X_fit = X if self.metric == "euclidean" and isinstance(X, np.ndarray) else None
        self._Y_fit = np.ascontiguousarray(Y.T)
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

        explore_iter = self._EXPLORATION_MAX_ITER
        common = dict(learning_rate=self.learning_rate_, min_grad_norm=self.min_grad_norm,
                      threads=policy, n_iter_check=self._N_ITER_CHECK, verbose=self.verbose,
                      callbacks=self.callbacks, on_check=on_check)
        try:  # each phase starts from zero update and unit gains, as scikit-learn's does
            Y, kl, it, stopped = gradient_descent(
                objective, Y, 0, explore_iter, exaggeration=self.early_exaggeration,
                momentum=0.5, n_iter_without_progress=explore_iter,
                state=Descent.start(Y, self.backend), **common)
            if self.verbose:
                print("[t-SNE] KL divergence after %d iterations with early exaggeration: %f"
                      % (it + 1, kl))
            if not stopped and (it < explore_iter or self.max_iter > explore_iter):
                Y, kl, it, stopped = gradient_descent(
                    objective, Y, it + 1, self.max_iter, exaggeration=1.0, momentum=0.8,
                    n_iter_without_progress=self.n_iter_without_progress,
                    state=Descent.start(Y, self.backend), **common)
        finally:
            bar.close()
        return Y, kl, it

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit and return ``embedding_`` [N, n_components]."""
        return self.fit(X).embedding_

    def transform(self, X_new, **options) -> np.ndarray:
        """Place new points into the fitted embedding, each independently, exactly.

        openTSNE's transform: affinities of each new point to all fitted points at
        ``perplexity`` (each row sums to 1), start at the median position of its ``k``
        nearest fitted points, then ``n_iter`` steps of gradient descent (gains,
        ``momentum``, ``learning_rate``; attraction scaled by ``exaggeration``; the
        gradient clipped to ``max_grad_norm``) with the fitted points held fixed.
        ``options`` and their defaults are those of ``vaefast.tsne.transform.place``.
        Needs a 2-D map fitted on dense points with the euclidean metric. Returns [M, 2].
        """
        if not hasattr(self, "embedding_"):
            raise VaefastError("this TSNE is not fitted yet; call fit first")
        if self._X_fit is None or self.n_components != 2:
            raise VaefastError("transform places points by euclidean affinities in a 2-D "
                               "map: fit with metric='euclidean', n_components=2 and dense X")
        X_new = np.asarray(X_new)
        if X_new.ndim != 2 or X_new.shape[1] != self.n_features_in_:
            raise VaefastError(f"X_new has shape {X_new.shape}, expected "
                               f"[M, {self.n_features_in_}]")
        if X_new.shape[0] == 0:
            return np.empty((0, 2))
        X_new = check_points(np.concatenate([X_new, X_new[:1]]) if len(X_new) == 1 else X_new,
                             "X_new")[:len(X_new)]
        with numba_threads(self.n_jobs):
            return place(X_new, self._X_fit, self._Y_fit, backend=self.backend,
                         n_jobs=self._blas_threads(), **options)

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
from vaefast.tsne.fit import auto_learning_rate, check_points, fit_embedding, scaled_start
from vaefast.tsne.optimizer import EXPLORATION_MAX_ITER, N_ITER_CHECK, Callback
from vaefast.tsne.threads import blas_threads, numba_threads
from vaefast.tsne.transform import place


class TSNE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Exact t-SNE with scikit-learn's parameters, defaults and semantics, computed by Numba.

    Every pair contributes to attraction and repulsion (no Barnes-Hut, FFT or kNN
    truncation); each unordered pair is computed once per iteration. P is stored (float32
    upper triangle) up to N of about 8,000 with AVX-512 (without, while it fits), else as
    its pairs above scikit-learn's floor eps (a bit a pair, 4 bytes a kept one), as long
    as it fits ``max_dense_bytes`` (default None: half the memory available at fit time),
    else recomputed to the same bits on the fly so memory stays O(N D) (euclidean
    metric). Results are bit-identical for a given ``random_state`` whatever ``n_jobs``
    is, however P is kept.

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
    # scikit-learn's names; its tests set them on an instance
    _EXPLORATION_MAX_ITER = EXPLORATION_MAX_ITER
    _N_ITER_CHECK = N_ITER_CHECK

    def __init__(
        self,
        n_components: int = 2,
        *,
        perplexity: float = 30.0,
        early_exaggeration: float = 12.0,
        learning_rate: float | str = "auto",
        max_iter: int = 1000,
        n_iter_without_progress: int = 300,
        min_grad_norm: float = 1e-7,
        metric: str | Callable = "euclidean",
        metric_params: dict | None = None,
        init: str | np.ndarray = "pca",
        verbose: int = 0,
        random_state: int | np.random.RandomState | None = None,
        method: str = "exact",
        angle: float = 0.5,
        n_jobs: int | None = None,
        progress: bool = False,
        callbacks: Sequence[Callback] = (),
        max_dense_bytes: int | None = None,
        backend: str = DEFAULT,
    ):
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
            raise VaefastError(
                f"method={self.method!r}: vaefast computes the exact method "
                "only; for Barnes-Hut use sklearn.manifold.TSNE("
                "method='barnes_hut') or openTSNE.TSNE"
            )
        if self.n_components > 3:
            raise VaefastError(
                f"n_components={self.n_components}: vaefast's exact t-SNE "
                "embeds in 1 to 3 dimensions; use sklearn.manifold.TSNE("
                "method='exact') for more"
            )
        X = validate_data(
            self,
            X,
            accept_sparse=["csr", "csc", "coo"],
            dtype=[np.float32, np.float64],
            ensure_min_samples=2,
        )
        if self.metric == "precomputed":
            if isinstance(self.init, str) and self.init == "pca":
                raise ValueError(
                    'The parameter init="pca" cannot be used with metric="precomputed".'
                )
            if X.shape[0] != X.shape[1]:
                raise ValueError("X should be a square distance matrix")
            check_non_negative(
                X, "TSNE.fit(). With metric='precomputed', X should contain positive distances."
            )
            if issparse(X):
                raise TypeError(
                    'TSNE with method="exact" does not accept sparse '
                    'precomputed distance matrix. Use method="barnes_hut" '
                    "or provide the dense distance matrix."
                )
        elif not issparse(X) and not np.isfinite(X).all():
            raise VaefastError("X contains NaN or inf")
        n = X.shape[0]
        if self.perplexity >= n:
            raise ValueError(f"perplexity ({self.perplexity}) must be less than n_samples ({n})")
        if isinstance(self.init, np.ndarray):
            if self.init.shape != (n, self.n_components):
                raise ValueError(
                    f"init array has shape {self.init.shape}, expected ({n}, {self.n_components})"
                )
            if not np.isfinite(self.init).all():
                raise VaefastError("init array contains NaN or inf")
        return X

    def _affinities(self, X):
        """P for X under the chosen metric (the fast, memory-bounded path for dense
        euclidean input; scikit-learn's pairwise distances otherwise)."""
        from scipy.sparse import issparse

        if self.metric == "euclidean" and not issparse(X):
            return joint_probabilities(
                X,
                self.perplexity,
                self.max_dense_bytes,
                backend=self.backend,
                verbose=self.verbose,
                n_jobs=blas_threads(self.n_jobs),
            )
        from sklearn.metrics import pairwise_distances

        if self.metric == "precomputed":
            distances = X
        else:
            if self.verbose:
                print("[t-SNE] Computing pairwise distances...")
            if self.metric == "euclidean":
                distances = pairwise_distances(X, metric="euclidean", squared=True)
            else:
                distances = pairwise_distances(
                    X, metric=self.metric, n_jobs=self.n_jobs, **(self.metric_params or {})
                )
        if np.any(distances < 0):
            raise ValueError("All distances should be positive, the metric given is not correct")
        distances = np.asarray(distances, dtype=np.float64)
        if self.metric != "euclidean":
            distances = distances**2
        return joint_probabilities_from_distances(
            distances, self.perplexity, backend=self.backend, verbose=self.verbose
        )

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
                return scaled_start(pca.fit_transform(X))
        return (
            1e-4 * random_state.standard_normal(size=(X.shape[0], k)).astype(np.float32)
        ).astype(np.float64)

    # --- fitting ------------------------------------------------------------------------

    def fit(self, X, y=None) -> "TSNE":
        """Compute the embedding of X [N, D] (or [N, N] distances with
        ``metric="precomputed"``); sets ``embedding_`` and friends."""
        X = self._validate(X)
        self.learning_rate_ = (
            auto_learning_rate(X.shape[0], self.early_exaggeration)
            if self.learning_rate == "auto"
            else float(self.learning_rate)
        )
        with numba_threads(self.n_jobs) as threads:
            t0 = time.perf_counter()
            affinities = self._affinities(X)
            t1 = time.perf_counter()
            run = fit_embedding(
                affinities,
                self._initial_embedding(X),
                threads=threads,
                learning_rate=self.learning_rate_,
                early_exaggeration=self.early_exaggeration,
                max_iter=self.max_iter,
                n_iter_without_progress=self.n_iter_without_progress,
                min_grad_norm=self.min_grad_norm,
                progress=self.progress,
                callbacks=self.callbacks,
                verbose=self.verbose,
                exploration_iter=self._EXPLORATION_MAX_ITER,
                n_iter_check=self._N_ITER_CHECK,
            )
        self.embedding_, self.kl_divergence_, self.n_iter_ = run.embedding, run.kl, run.n_iter
        self._X_fit = X if self.metric == "euclidean" and isinstance(X, np.ndarray) else None
        self._Y_fit = np.ascontiguousarray(run.Y.T)
        self.timings_ = {"affinities_s": t1 - t0} | run.timings
        if self.verbose:
            print(f"[t-SNE] KL divergence after {run.n_iter + 1} iterations: {run.kl:.6f}")
        return self

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
            raise VaefastError(
                "transform places points by euclidean affinities in a 2-D "
                "map: fit with metric='euclidean', n_components=2 and dense X"
            )
        X_new = np.asarray(X_new)
        if X_new.ndim != 2 or X_new.shape[1] != self.n_features_in_:
            raise VaefastError(
                f"X_new has shape {X_new.shape}, expected [M, {self.n_features_in_}]"
            )
        if X_new.shape[0] == 0:
            return np.empty((0, 2))
        X_new = check_points(
            np.concatenate([X_new, X_new[:1]]) if len(X_new) == 1 else X_new, "X_new"
        )[: len(X_new)]
        with numba_threads(self.n_jobs):
            return place(
                X_new,
                self._X_fit,
                self._Y_fit,
                backend=self.backend,
                n_jobs=blas_threads(self.n_jobs),
                **options,
            )

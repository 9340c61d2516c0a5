"""One exact t-SNE run from given affinities and start: what follows P in scikit-learn's
``TSNE._fit``, shared by the estimator and by the maps of ``vaefast.tsne.mapping``.

Free of scikit-learn on purpose: ``embed --tsne`` and ``plot`` fit their maps without
importing it, since scikit-learn imports pandas and pyarrow where they are installed
(~65 MB resident, a tenth of embed's 600 MB budget; RESULTS.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vaefast.errors import VaefastError
from vaefast.tsne.affinities import Affinities
from vaefast.tsne.objective import KLObjective
from vaefast.tsne.optimizer import Callback, optimize
from vaefast.tsne.threads import ThreadPolicy


@dataclass
class Fit:
    """A finished run: ``embedding`` [N, n_components] float32, its KL, the index of the
    last iteration (as scikit-learn counts), the optimizer's state ``Y`` [dims, N] and
    ``timings`` (optimize_s, iterations, p_storage, p_gb, pairs_per_s,
    iterations_by_threads)."""

    embedding: np.ndarray
    kl: float
    n_iter: int
    Y: np.ndarray = field(repr=False)
    timings: dict


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


def auto_learning_rate(n: int, early_exaggeration: float) -> float:
    """scikit-learn's ``learning_rate="auto"``: max(N / early_exaggeration / 4, 50)."""
    return max(n / early_exaggeration / 4, 50.0)


def scaled_start(Y: np.ndarray) -> np.ndarray:
    """A PCA start as scikit-learn's t-SNE scales it: float32 values, the first column's
    standard deviation 1e-4 (a constant input, with no direction, stays at zero)."""
    Y = np.asarray(Y).astype(np.float32, copy=False)
    std = np.std(Y[:, 0])
    return (Y / std * 1e-4 if std > 0 else Y).astype(np.float64)


def fit_embedding(
    affinities: Affinities,
    start: np.ndarray,
    *,
    threads: int,
    learning_rate: float,
    early_exaggeration: float = 12.0,
    max_iter: int = 1000,
    n_iter_without_progress: int = 300,
    min_grad_norm: float = 1e-7,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
    verbose: int = 0,
    **schedule: int,
) -> Fit:
    """Optimize the embedding that starts at ``start`` [N, n_components] (1 to 3) under
    P = ``affinities``; ``threads``: the most Numba threads (a ``ThreadPolicy`` picks);
    ``schedule``: ``optimizer.optimize``'s exploration_iter and n_iter_check."""
    t0 = time.perf_counter()
    n, n_components = start.shape
    # the kernels work in 2-D or 3-D; one component is the 2-D problem with y1 = 0
    dims = max(n_components, 2)
    objective = KLObjective(affinities, dims)
    Y = np.zeros((dims, n), np.float32)  # scikit-learn's float32 state
    Y[:n_components] = start.T
    policy = ThreadPolicy(threads)
    Y, kl, it = optimize(
        objective,
        Y,
        learning_rate=learning_rate,
        early_exaggeration=early_exaggeration,
        max_iter=max_iter,
        n_iter_without_progress=n_iter_without_progress,
        min_grad_norm=min_grad_norm,
        threads=policy,
        progress=progress,
        callbacks=callbacks,
        verbose=verbose,
        backend=affinities.backend,
        **schedule,
    )
    seconds = time.perf_counter() - t0
    iterations = it + 1
    timings = {
        "optimize_s": seconds,
        "iterations": iterations,
        "p_storage": affinities.storage,
        "p_gb": affinities.nbytes / 1e9,
        "pairs_per_s": n * (n - 1) * iterations / max(seconds, 1e-12),
        "iterations_by_threads": dict(policy.history),
    }
    return Fit(np.ascontiguousarray(Y[:n_components].T, dtype=np.float32), kl, it, Y, timings)

"""Maps of any size: exact t-SNE of all points, or of a seeded reference sample with every
other point placed by ``transform`` — the one large-N rule, used by embed and plot; its
small-N perplexity rule (``perplexity_for``) is also the one ``vaefast tsne`` uses.

Maps never import scikit-learn (see ``vaefast.tsne.fit``): their PCA start is
``pca_start``, scikit-learn's PCA init to rounding.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from vaefast.errors import VaefastError
from vaefast.tsne.affinities import joint_probabilities
from vaefast.tsne.fit import Fit, auto_learning_rate, check_points, fit_embedding, scaled_start
from vaefast.tsne.threads import blas_threads, numba_threads
from vaefast.tsne.transform import Prepared, place, prepare

DEFAULT_MAX_EXACT = 10_000  # exact t-SNE of all points up to this N
PERPLEXITY = 30.0


def perplexity_for(n: int, perplexity: float = PERPLEXITY) -> float:
    """scikit-learn's default perplexity, lowered to (n - 1) / 3 for small n (it must
    stay below n)."""
    if n < 2:
        raise VaefastError(f"a t-SNE map needs at least 2 points, got {n}")
    return min(perplexity, (n - 1) / 3)


def reference_rows(n: int, max_exact: int = DEFAULT_MAX_EXACT, seed: int = 0) -> np.ndarray:
    """Sorted rows of the exact map: all of them up to ``max_exact``, else a seeded sample."""
    if max_exact < 2:
        raise VaefastError(f"the exact map needs at least 2 points, got max_exact={max_exact}")
    perplexity_for(n)
    if n <= max_exact:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_exact, replace=False))


EXACT_PCA_MAX_FEATURES = 1000  # exact PCA (covariance eigh) up to this many, as scikit-learn's
POWER_ITERATIONS = 7  # above: a subspace iteration, as scikit-learn's randomized PCA


def pca_start(X: np.ndarray, n_components: int = 2, seed: int = 0) -> np.ndarray:
    """scikit-learn's t-SNE PCA init without scikit-learn: the leading principal components
    of X, each signed so its largest loading is positive (``svd_flip``), scaled as
    ``fit.scaled_start``. Exact (eigenvectors of the covariance) up to
    ``EXACT_PCA_MAX_FEATURES`` features; above, a seeded subspace iteration over
    ``n_components + 10`` directions (Halko et al.)."""
    X = np.asarray(X, np.float64)
    centered = X - X.mean(axis=0)
    if X.shape[1] <= EXACT_PCA_MAX_FEATURES:
        vectors = np.linalg.eigh(centered.T @ centered)[1][:, ::-1]
    else:
        Q = np.random.default_rng(seed).standard_normal((X.shape[1], n_components + 10))
        for _ in range(POWER_ITERATIONS):
            Q = np.linalg.qr(centered.T @ (centered @ Q))[0]
        vectors = Q @ np.linalg.svd(centered @ Q, full_matrices=False)[2].T
    components = vectors.T[:n_components]
    rows = np.arange(len(components))
    components *= np.sign(components[rows, np.argmax(np.abs(components), axis=1)])[:, None]
    start = np.zeros((len(X), n_components))  # fewer features than components: zeros
    start[:, rows] = centered @ components.T
    return scaled_start(start)


def fit_reference(
    X_ref: np.ndarray, seed: int = 0, n_jobs: int | None = None, progress: bool = False
) -> Fit:
    """Exact t-SNE of the reference points (scikit-learn's defaults, the small-n
    perplexity rule, ``pca_start``)."""
    X = check_points(X_ref)
    with numba_threads(n_jobs) as threads:
        affinities = joint_probabilities(X, perplexity_for(len(X)), n_jobs=blas_threads(n_jobs))
        return fit_embedding(
            affinities,
            pca_start(X, 2, seed),
            threads=threads,
            learning_rate=auto_learning_rate(len(X), 12.0),
            progress=progress,
        )


def place_chunks(
    X: Callable[[int, int], np.ndarray],
    n: int,
    index: np.ndarray,
    X_ref: np.ndarray,
    Y_ref: np.ndarray,
    chunk_rows: int,
    chunks: list[int] | None = None,
    method: str = "exact",
    prepared: Prepared | None = None,
) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Positions of rows chunk by chunk: reference rows keep their exact position, the
    others are placed by transform (``method``: a name in ``transform.PLACEMENTS``;
    ``prepared``: the map's ``transform.prepare``, made here once if not given);
    rows with no point (NaN: an input skipped as undecodable) get NaN.
    Yields (chunk, start, stop, Y [stop - start, 2])."""
    position = {int(r): k for k, r in enumerate(index)}
    prepared = prepared or prepare(Y_ref, method)
    todo = range(-(-n // chunk_rows)) if chunks is None else chunks
    for chunk in todo:
        start, stop = chunk * chunk_rows, min((chunk + 1) * chunk_rows, n)
        rows = np.arange(start, stop)
        in_ref = np.isin(rows, index)
        out = np.full((stop - start, 2), np.nan)
        out[in_ref] = Y_ref[[position[int(r)] for r in rows[in_ref]]]
        if (~in_ref).any():
            X_new = X(start, stop)
            new = ~in_ref & np.isfinite(X_new).all(axis=1)
            if new.any():
                out[new] = place(X_new[new], X_ref, Y_ref, method=method, prepared=prepared)
        yield chunk, start, stop, out


def map_points(
    X: np.ndarray,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: bool = False,
    method: str = "exact",
) -> np.ndarray:
    """2-D map of X [N, Z]: exact t-SNE of all rows up to ``max_exact``; above, exact
    t-SNE of a seeded sample of that size with every other row placed by transform
    (``method``: a name in ``transform.PLACEMENTS``)."""
    X = np.asarray(X)
    index = reference_rows(len(X), max_exact, seed)
    reference = fit_reference(X[index], seed, n_jobs, progress)
    if len(index) == len(X):
        return reference.embedding
    out = np.empty((len(X), 2))
    with numba_threads(n_jobs):
        for _, start, stop, Y in place_chunks(
            lambda a, b: X[a:b], len(X), index, X[index], reference.embedding, len(X), method=method
        ):
            out[start:stop] = Y
    return out

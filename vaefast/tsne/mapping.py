"""Maps of any size: exact t-SNE of all points, or of a seeded reference sample with every
other point placed by ``transform`` — the one large-N rule, used by embed and plot; its
small-N perplexity rule (``perplexity_for``) is also the one ``vaefast tsne`` uses.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from vaefast.errors import VaefastError
from vaefast.tsne.estimator import TSNE
from vaefast.tsne.threads import numba_threads
from vaefast.tsne.transform import place

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


def fit_reference(X_ref: np.ndarray, seed: int = 0, n_jobs: int | None = None,
                  progress: bool = False) -> TSNE:
    """Exact t-SNE of the reference points with the small-n perplexity rule."""
    return TSNE(perplexity=perplexity_for(len(X_ref)), random_state=seed, n_jobs=n_jobs,
                progress=progress).fit(X_ref)


def place_chunks(X: Callable[[int, int], np.ndarray], n: int, index: np.ndarray,
                 X_ref: np.ndarray, Y_ref: np.ndarray, chunk_rows: int,
                 chunks: list[int] | None = None, method: str = "exact"
                 ) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Positions of rows chunk by chunk: reference rows keep their exact position, the
    others are placed by transform (``method``: a name in ``transform.PLACEMENTS``);
    rows with no point (NaN: an input skipped as undecodable) get NaN.
    Yields (chunk, start, stop, Y [stop - start, 2])."""
    position = {int(r): k for k, r in enumerate(index)}
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
                out[new] = place(X_new[new], X_ref, Y_ref, method=method)
        yield chunk, start, stop, out


def map_points(X: np.ndarray, max_exact: int = DEFAULT_MAX_EXACT, seed: int = 0,
               n_jobs: int | None = None, progress: bool = False,
               method: str = "exact") -> np.ndarray:
    """2-D map of X [N, Z]: exact t-SNE of all rows up to ``max_exact``; above, exact
    t-SNE of a seeded sample of that size with every other row placed by transform
    (``method``: a name in ``transform.PLACEMENTS``)."""
    X = np.asarray(X)
    index = reference_rows(len(X), max_exact, seed)
    tsne = fit_reference(X[index], seed, n_jobs, progress)
    if len(index) == len(X):
        return tsne.embedding_
    out = np.empty((len(X), 2))
    with numba_threads(n_jobs):
        for _, start, stop, Y in place_chunks(lambda a, b: X[a:b], len(X), index, X[index],
                                              tsne.embedding_, len(X), method=method):
            out[start:stop] = Y
    return out

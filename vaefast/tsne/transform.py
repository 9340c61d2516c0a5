"""Out-of-sample placement: new points optimized one by one against a fixed embedding.

openTSNE's ``TSNEEmbedding.transform`` semantics, computed exactly: each new point gets
perplexity-calibrated affinities to *all* reference points (no kNN truncation), starts
at the median embedding position of its ``k`` nearest reference points, and descends
the gradient of its own KL term with the reference points held fixed. Ways of placing
are entries of ``PLACEMENTS``: "exact" (the default) and the opt-in "interpolated"
(FIt-SNE's idea for a fixed reference: its repulsive field tabulated on a grid once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vaefast.errors import VaefastError
from vaefast.tsne.affinities import (
    GEMM_MIN_FEATURES,
    log_perplexity,
    squared_distances,
    squared_norms,
)
from vaefast.tsne.backends import DEFAULT, kernels

PLACE_ROWS = 1024  # new points per distance block ([1,024, N] float32: 40 MB at N = 10,000)


def split_coordinates(Y: np.ndarray) -> np.ndarray:
    """[N, 2] positions as the pair kernels read them: [4, N] float32, the high parts of
    both coordinates then the low parts (y = high + low to ~1e-14 |y|)."""
    y = np.ascontiguousarray(np.asarray(Y, np.float64).T)
    high = y.astype(np.float32)
    return np.ascontiguousarray(np.concatenate([high, (y - high).astype(np.float32)]))


def _no_grid(hl: np.ndarray, kern) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((3, 0, 0)), np.zeros(3)


def repulsion_grid(hl: np.ndarray, kern, nodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference's repulsive fields tabulated on a ``nodes`` x ``nodes`` square grid
    over its bounding box plus a margin: (grid [3, G, G], frame [x0, y0, spacing])."""
    nodes = nodes or GRID_NODES
    y = hl[:2].astype(np.float64) + hl[2:].astype(np.float64)
    lo, hi = y.min(axis=1), y.max(axis=1)
    margin = 0.1 * float((hi - lo).max()) + 2.0
    spacing = (float((hi - lo).max()) + 2 * margin) / (nodes - 1)
    frame = np.array([lo[0] - margin, lo[1] - margin, spacing])
    grid = np.empty((3, nodes, nodes))
    kern.repulsion_grid(hl, frame, grid)
    return grid, frame


@dataclass(frozen=True)
class Placement:
    """A way to place new points: how the reference's repulsion is evaluated."""

    grid: Callable[[np.ndarray, object], tuple[np.ndarray, np.ndarray]]
    describe: str


GRID_NODES = 256  # per side of the interpolated placement's grid (RESULTS.md: its error)
PLACEMENTS: dict[str, Placement] = {
    "exact": Placement(
        _no_grid, "every reference point attracts and repels, exactly (the default)"
    ),
    "interpolated": Placement(
        repulsion_grid,
        "P over the nearest references (their "
        "attraction exact); the repulsion of all "
        "read from a tabulated grid (FIt-SNE's "
        "interpolation); opt-in, faster, approximate",
    ),
}


@dataclass(frozen=True)
class Prepared:
    """What placing against a fixed map needs beyond its points, computed once per map
    and shared by every call (and every Dask task): its positions as the kernels read
    them (``split_coordinates``) and, for "interpolated", its tabulated repulsion grid."""

    hl: np.ndarray
    grid: np.ndarray
    frame: np.ndarray


def prepare(Y_ref: np.ndarray, method: str = "exact", backend: str = DEFAULT) -> Prepared:
    """The shared set-up of placements against the map Y_ref [N, 2] by ``method``."""
    hl = split_coordinates(Y_ref)
    return Prepared(hl, *placement(method).grid(hl, kernels(backend)))


def placement(name: str) -> Placement:
    """The registry entry of a placement method, or a clear error."""
    if name not in PLACEMENTS:
        raise VaefastError(f"unknown transform method {name!r}; use one of {', '.join(PLACEMENTS)}")
    return PLACEMENTS[name]


def place(
    X_new: np.ndarray,
    X_ref: np.ndarray,
    Y_ref: np.ndarray,
    *,
    method: str = "exact",
    perplexity: float = 5.0,
    k: int = 25,
    n_iter: int = 250,
    learning_rate: float = 0.1,
    exaggeration: float = 1.5,
    momentum: float = 0.8,
    max_grad_norm: float = 0.25,
    attract: int = 90,
    backend: str = DEFAULT,
    n_jobs: int | None = None,
    prepared: Prepared | None = None,
) -> np.ndarray:
    """Embed rows of X_new [M, D] into the reference embedding Y_ref [N, 2] of X_ref [N, D].

    ``method``: a name in ``PLACEMENTS`` ("exact", or the opt-in "interpolated", whose
    P covers the ``attract`` nearest references). With many features
    (``affinities.GEMM_MIN_FEATURES``) the distances to the reference come from BLAS
    GEMMs (``n_jobs`` threads), a block of new points at a time. ``prepared``: this
    map's ``prepare(Y_ref, method, backend)``, when placing against it many times."""
    if not 0 < perplexity < X_ref.shape[0]:
        raise VaefastError(
            f"perplexity ({perplexity}) must be positive and less than the "
            f"{X_ref.shape[0]} fitted points"
        )
    prepared = prepared or prepare(Y_ref, method, backend)
    k = min(k, X_ref.shape[0])
    kern = kernels(backend)
    out = np.empty((X_new.shape[0], 2))
    args = (  # ints and floats as such: one compiled signature for any input
        prepared.hl,
        prepared.grid,
        prepared.frame,
        int(k),
        int(max(attract, k)),
        log_perplexity(perplexity),
        int(n_iter),
        float(learning_rate),
        float(exaggeration),
        float(momentum),
        float(max_grad_norm),
        0.01,
    )
    if X_new.shape[1] < GEMM_MIN_FEATURES:
        kern.place_points(
            np.ascontiguousarray(X_new, np.float64),
            np.ascontiguousarray(X_ref.T, np.float64),
            *args,
            out,
        )
        return out
    from threadpoolctl import threadpool_limits

    ref = np.ascontiguousarray(X_ref, np.float64)
    ref_sq = squared_norms(ref)
    for start in range(0, X_new.shape[0], PLACE_ROWS):
        x = np.ascontiguousarray(X_new[start : start + PLACE_ROWS], np.float64)
        with threadpool_limits(limits=n_jobs, user_api="blas"):
            D = squared_distances(x, squared_norms(x), ref, ref_sq)
        kern.place_points_from_distances(D, *args, out[start : start + len(x)])
    return out

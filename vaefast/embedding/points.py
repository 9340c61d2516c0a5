"""The points ``vaefast tsne`` maps: latent means from a finished embed store, or any
numeric [N, Z] array a user saved. Above both the data readers and the store, so that
neither has to know the other."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vaefast.embedding import store
from vaefast.data.arrays import POINT_KEYS, load_numpy, named_arrays, open_zarr
from vaefast.errors import VaefastError


def read_points(path: str | os.PathLike) -> np.ndarray:
    """An [N, Z] numeric array to map with t-SNE: a .npy, a .npz's ``mu`` (or an
    X_KEYS array), or a zarr array or group (a finished ``vaefast embed`` store gives
    its ``mu``, spatial latents flattened; an unfinished one is refused). NaN or inf is
    an error naming the first bad row."""
    path = Path(path)
    if path.suffix == ".zarr":
        X = (
            store.read_mu(store.open_embeddings(path), slice(None))
            if store.is_store(path)
            else np.asarray(open_zarr(path, POINT_KEYS)[0][:])
        )
    elif not path.is_file():
        raise VaefastError(f"{path}: file not found")
    elif path.suffix == ".npy":
        X = load_numpy(path, np.asarray, archive=False)
    elif path.suffix == ".npz":
        X = load_numpy(
            path, lambda z: named_arrays(z, set(z), str(path), POINT_KEYS)[0], archive=True
        )
    else:
        raise VaefastError(f"{path}: expected a .npy, .npz or .zarr input")
    if X.dtype.kind not in "iuf" or X.ndim < 2 or (X.ndim > 2 and path.suffix != ".zarr"):
        raise VaefastError(f"{path}: expected a numeric [N, Z] array, got {X.dtype} {X.shape}")
    X = X.reshape(len(X), -1)  # spatial latents [N, C, h, w] of a store, flattened
    if X.dtype.kind == "f":
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            raise VaefastError(
                f"{path}: NaN or inf at row {int(np.flatnonzero(bad)[0])}; clean the data first"
            )
    return X

"""Reading points to embed from files (npy, npz, zarr), with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vaefast.errors import VaefastError

KEYS = ("mu", "X", "x", "arr_0")


def read_points(path: str | os.PathLike) -> np.ndarray:
    """An [N, Z] float array from a .npy, a .npz's ``mu`` (or ``X``) array, or a zarr array
    or group (a finished ``vaefast embed`` store gives its ``mu``)."""
    path = Path(path)
    if path.suffix == ".zarr":
        return _read_zarr(path)
    if not path.is_file():
        raise VaefastError(f"{path}: file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in KEYS if k in z), None)
                if key is None:
                    raise VaefastError(f"{path}: no array named mu or X (found {list(z)})")
                X = z[key]
        elif path.suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        else:
            raise VaefastError(f"{path}: expected a .npy, .npz or .zarr input")
    except VaefastError:
        raise
    except Exception as e:
        raise VaefastError(f"{path}: not a readable numpy file ({e})") from None
    if X.dtype.kind not in "iuf" or X.ndim != 2:
        raise VaefastError(f"{path}: expected a numeric [N, Z] array, got {X.dtype} {X.shape}")
    return X


def _read_zarr(path: Path) -> np.ndarray:
    import zarr

    from vaefast.embedding import FORMAT, open_embeddings

    if not path.exists():
        raise VaefastError(f"{path}: no such zarr store")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise VaefastError(f"{path}: not a readable zarr store ({e})") from None
    if isinstance(node, zarr.Group):
        if (dict(node.attrs).get("vaefast") or {}).get("format") == FORMAT:
            node = open_embeddings(path)  # refuses an unfinished store
        key = next((k for k in KEYS if k in set(node.array_keys())), None)
        if key is None:
            raise VaefastError(f"{path}: no array named mu or X")
        node = node[key]
    X = np.asarray(node[:])
    if X.dtype.kind not in "iuf" or X.ndim != 2:
        raise VaefastError(f"{path}: expected a numeric [N, Z] array, got {X.dtype} {X.shape}")
    return X

"""Reading points to embed from files (npy, npz), with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vaefast.errors import VaefastError

KEYS = ("mu", "X", "x", "arr_0")


def read_points(path: str | os.PathLike) -> np.ndarray:
    """An [N, Z] float array from a .npy, or from a .npz's ``mu`` (or ``X``) array."""
    path = Path(path)
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
            raise VaefastError(f"{path}: expected a .npy or .npz file")
    except VaefastError:
        raise
    except Exception as e:
        raise VaefastError(f"{path}: not a readable numpy file ({e})") from None
    if X.dtype.kind not in "iuf" or X.ndim != 2:
        raise VaefastError(f"{path}: expected a numeric [N, Z] array, got {X.dtype} {X.shape}")
    return X

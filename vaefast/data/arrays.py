"""Arrays as stored: ``.npy`` (read by positioned reads), ``.npz`` and zarr arrays or
groups; their validation (pixels, labels); and the points ``vaefast tsne`` maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaefast.data.sources import RawData, Source
from vaefast.errors import BadRows, VaefastError
from vaefast.layout import check_pixels, stored_image_shape

_CHECK_ROWS = 65536  # rows per chunk when validating memory-mapped arrays
X_KEYS = ("X", "x", "data", "images", "arr_0")  # the one list of names for the inputs
Y_KEYS = ("y", "Y", "labels", "arr_1")  # and for their labels
POINT_KEYS = ("mu", *X_KEYS)  # points to map with t-SNE: latent means first


def check_features(X: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...] | None, float]:
    """Validate an [N, D], [N, H, W], [N, H, W, C] or [N, C, H, W] numeric array; return
    (X as stored, display image shape, scale).

    Integers must lie in [0, 255] (pixels, scale 255); floats in [0, 1] (scale 1).
    Checked in chunks so memory-mapped arrays are never loaded whole.
    """
    if np.dtype(X.dtype).kind not in "uif":
        raise VaefastError(
            f"{name}: dtype {X.dtype} is not numeric; store pixels as uint8 or floats in [0, 1]"
        )
    if X.ndim not in (2, 3, 4):
        raise VaefastError(
            f"{name}: expected [N, D], [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {X.shape}"
        )
    image_shape = stored_image_shape(X.shape[1:])
    if X.ndim == 4 and image_shape is None:
        raise VaefastError(
            f"{name}: cannot tell the channel axis of shape {X.shape}; store "
            "images as [N, H, W, C] or [N, C, H, W] with C in 1, 3 or 4"
        )
    if X.shape[0] == 0 or 0 in X.shape[1:]:
        raise VaefastError(f"{name}: array is empty (shape {X.shape})")
    is_int = np.dtype(X.dtype).kind in "ui"
    for start in range(0, X.shape[0], _CHECK_ROWS):
        block = np.asarray(X[start : start + _CHECK_ROWS])
        try:
            check_pixels(block, 255.0, name)
        except BadRows as e:  # the row counted from the start of the file
            raise e.shifted(start) from None
    return X, image_shape, 255.0 if is_int else 1.0


def check_labels(y: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    """Validate labels: 1-D integers, one per row."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise VaefastError(f"{name}: labels have shape {y.shape}, expected ({n},)")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise VaefastError(f"{name}: labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def load_numpy(path: Path, pick, archive: bool):
    """``pick`` applied to a loaded .npy array (memory-mapped) or open .npz archive, with
    pickles refused and unreadable files turned into clear errors."""
    try:
        if archive:
            with np.load(path, allow_pickle=False) as z:
                return pick(z)
        return pick(np.load(path, mmap_mode="r", allow_pickle=False))
    except VaefastError:
        raise
    except ValueError as e:  # object arrays need pickle, which we never load
        raise VaefastError(f"{path}: cannot read without pickle ({e})") from None
    except Exception as e:  # truncated or not a numpy file
        raise VaefastError(f"{path}: not a readable numpy file ({e})") from None


def _read_numpy(path: Path, kind: str) -> RawData:
    if not path.is_file():
        raise VaefastError(f"{path}: file not found")
    X, y = load_numpy(
        path,
        lambda z: (z, None) if kind == "npy" else named_arrays(z, set(z), str(path)),
        archive=kind == "npz",
    )
    X, image_shape, scale = check_features(X, str(path))
    y = check_labels(y, X.shape[0], str(path))
    names = None if y is None else [str(v) for v in np.unique(y)]
    return RawData(X, y, image_shape, names, scale, f"{kind}:{path}")


def named_arrays(container, keys, name: str, x_keys: tuple[str, ...] = X_KEYS):
    """(X, y or None) from a mapping of named arrays, by ``x_keys`` and Y_KEYS."""
    xkey = next((k for k in x_keys if k in keys), None)
    if xkey is None:
        raise VaefastError(f"{name}: no array named {' or '.join(x_keys)} (found {sorted(keys)})")
    ykey = next((k for k in Y_KEYS if k in keys), None)
    return container[xkey], (np.asarray(container[ykey][:]) if ykey else None)


def open_zarr(path: Path, x_keys: tuple[str, ...] = X_KEYS):
    """The X array (zarr, not loaded) and labels of a zarr array or group."""
    import zarr

    if not path.exists():
        raise VaefastError(f"{path}: no such zarr store")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise VaefastError(f"{path}: not a readable zarr store ({e})") from None
    if isinstance(node, zarr.Group):
        return named_arrays(node, set(node.array_keys()), str(path), x_keys)
    return node, None


def read_zarr(path: Path) -> RawData:
    """A zarr array, or a group holding X and optionally y."""
    X, y = open_zarr(path)
    X, image_shape, scale = check_features(X, str(path))
    y = check_labels(y, X.shape[0], str(path))
    names = None if y is None else [str(v) for v in np.unique(y)]
    return RawData(X, y, image_shape, names, scale, f"zarr:{path}")


def read_npy(path: Path) -> RawData:
    """A ``.npy`` array X (memory-mapped)."""
    return _read_numpy(path, "npy")


def read_npz(path: Path) -> RawData:
    """A ``.npz`` holding X and optionally y (by X_KEYS and Y_KEYS)."""
    return _read_numpy(path, "npz")


def open_npy(path: Path, spec: str) -> Source | None:
    """A .npy file read by positioned reads (no memory map: resident memory stays
    bounded by the slice read)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except Exception as e:
        raise VaefastError(f"{path}: not a readable .npy file ({e})") from None
    if dtype.kind not in "uif" or dtype.hasobject:
        raise VaefastError(f"{path}: dtype {dtype} is not numeric")
    if fortran or len(shape) not in (2, 3, 4):
        raise VaefastError(
            f"{path}: expected a C-ordered [N, D], [N, H, W], [N, H, W, C] or "
            f"[N, C, H, W] array, got shape {shape}"
        )
    n, d = shape[0], int(np.prod(shape[1:]))
    expected = offset + n * d * dtype.itemsize
    if path.stat().st_size < expected:
        raise VaefastError(
            f"{path}: truncated; header promises {expected} bytes, file has {path.stat().st_size}"
        )
    return Source(spec, n, tuple(shape[1:]), dtype, None, path, offset)


def open_zarr_source(path: Path, spec: str) -> Source:
    """A zarr array read by slicing."""
    X, labels = open_zarr(path)
    if X.ndim not in (2, 3, 4) or np.dtype(X.dtype).kind not in "uif":
        raise VaefastError(
            f"{path}: expected a numeric [N, D] or image zarr array, got {X.dtype} {X.shape}"
        )
    labels = check_labels(labels, X.shape[0], str(path))
    return Source(spec, X.shape[0], tuple(X.shape[1:]), np.dtype(X.dtype), labels, None, 0, X)

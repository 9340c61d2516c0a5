"""Row sources for streaming: read any slice of a large input without loading it whole.

Specs are parsed by :func:`vaefast.data.parse_spec`, so every command accepts the same
inputs. ``.npy`` and raw IDX files are read with positioned reads (no memory map, so
resident memory stays bounded by the slice), zarr arrays by slicing; anything else
(mnist5k, digits, .npz, gzipped IDX, IDX folders) is loaded by :func:`vaefast.data.read`.
Rows come back in their stored sample shape ([n, D], [n, H, W], [n, H, W, C] or
[n, C, H, W]); the runtime lays them out for the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaefast import data
from vaefast.errors import VaefastError
from vaefast.layout import stored_image_shape


@dataclass
class Source:
    """An input of N samples of ``sample_shape``, read a slice at a time."""

    spec: str
    n: int
    sample_shape: tuple[int, ...]
    dtype: np.dtype
    labels: np.ndarray | None = None
    _path: Path | None = None
    _offset: int = 0
    _array: Any = None  # in-memory or zarr array
    _fingerprint: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """How one sample is displayed ([H, W] or [H, W, C]), when it is an image."""
        return stored_image_shape(self.sample_shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as stored (uint8 pixels or floats), [stop - start, *shape]."""
        shape = (stop - start, *self.sample_shape)
        if self._array is not None:
            return np.asarray(self._array[start:stop]).reshape(shape)
        row_bytes = self.n_features * self.dtype.itemsize
        count = (stop - start) * self.n_features
        with open(self._path, "rb") as f:
            f.seek(self._offset + start * row_bytes)
            out = np.fromfile(f, dtype=self.dtype, count=count)
        if out.size != count:
            raise VaefastError(f"{self._path}: truncated at row {start}; the file is shorter "
                               "than its header says")
        return out.reshape(shape)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input: spec, shape, dtype, and a hash of its first and
        last rows (cheap, and catches a different file under the same name)."""
        if not self._fingerprint:
            h = hashlib.sha256()
            k = min(self.n, 256)
            h.update(np.ascontiguousarray(self.rows(0, k)).tobytes())
            h.update(np.ascontiguousarray(self.rows(self.n - k, self.n)).tobytes())
            self._fingerprint = {"spec": self.spec, "rows": self.n,
                                 "features": self.n_features, "dtype": str(self.dtype),
                                 "edge_sha256": h.hexdigest()}
            if len(self.sample_shape) > 1:
                self._fingerprint["sample_shape"] = list(self.sample_shape)
        return self._fingerprint


def _npy(path: Path, spec: str) -> Source:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except Exception as e:
        raise VaefastError(f"{path}: not a readable .npy file ({e})") from None
    if dtype.kind not in "uif" or dtype.hasobject:
        raise VaefastError(f"{path}: dtype {dtype} is not numeric")
    if fortran or len(shape) not in (2, 3, 4):
        raise VaefastError(f"{path}: expected a C-ordered [N, D], [N, H, W], [N, H, W, C] or "
                           f"[N, C, H, W] array, got shape {shape}")
    n, d = shape[0], int(np.prod(shape[1:]))
    expected = offset + n * d * dtype.itemsize
    if path.stat().st_size < expected:
        raise VaefastError(f"{path}: truncated; header promises {expected} bytes, file has "
                           f"{path.stat().st_size}")
    return Source(spec, n, tuple(shape[1:]), dtype, None, path, offset)


def _zarr(path: Path, spec: str) -> Source:
    X, labels = data.open_zarr(path)
    if X.ndim not in (2, 3, 4) or np.dtype(X.dtype).kind not in "uif":
        raise VaefastError(f"{path}: expected a numeric [N, D] or image zarr array, got "
                           f"{X.dtype} {X.shape}")
    labels = data.check_labels(labels, X.shape[0], str(path))
    return Source(spec, X.shape[0], tuple(X.shape[1:]), np.dtype(X.dtype), labels, None, 0, X)


def _raw_idx(path: Path, spec: str) -> Source:
    images = data.read_idx(path)  # validates magic and size; memmap only for the header
    labels_file = path.with_name(path.name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte"))
    labels = None
    if labels_file.is_file() or labels_file.with_name(labels_file.name + ".gz").is_file():
        labels = data.read(f"idx:{path}").y
    n, shape = images.shape[0], tuple(images.shape[1:])
    del images
    return Source(spec, n, shape, np.dtype(np.uint8), labels, path, 16)


def open_source(spec: str) -> Source:
    """Open a data spec for slice-by-slice reading."""
    kind, path = data.parse_spec(spec)
    if kind == "zarr":
        return _zarr(Path(path), spec)
    if kind == "npy" and Path(path).is_file():
        return _npy(Path(path), spec)
    if kind == "idx" and Path(path).is_file() and path.endswith("-images-idx3-ubyte"):
        return _raw_idx(Path(path), spec)
    raw = data.read(spec)
    X = np.asarray(raw.X)
    return Source(spec, X.shape[0], tuple(X.shape[1:]), X.dtype, raw.y, None, 0, X)

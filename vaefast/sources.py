"""Row sources for streaming: read any slice of a large input without loading it whole.

``.npy`` and raw IDX files are read with positioned reads (no memory map, so resident
memory stays bounded by the slice), zarr arrays by slicing; anything else a data spec
names (mnist5k, digits, .npz, gzipped IDX, IDX folders) is loaded by ``vaefast.data``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaefast import data
from vaefast.errors import VaefastError


@dataclass
class Source:
    """An input of N rows of D features, read a slice at a time."""

    spec: str
    n: int
    n_features: int
    dtype: np.dtype
    labels: np.ndarray | None = None
    _path: Path | None = None
    _offset: int = 0
    _array: Any = None  # in-memory or zarr array
    _fingerprint: dict = field(default_factory=dict)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as stored (uint8 pixels or floats), [stop - start, D]."""
        if self._array is not None:
            return np.asarray(self._array[start:stop]).reshape(stop - start, self.n_features)
        row_bytes = self.n_features * self.dtype.itemsize
        count = (stop - start) * self.n_features
        with open(self._path, "rb") as f:
            f.seek(self._offset + start * row_bytes)
            out = np.fromfile(f, dtype=self.dtype, count=count)
        if out.size != count:
            raise VaefastError(f"{self._path}: truncated at row {start}; the file is shorter "
                               "than its header says")
        return out.reshape(stop - start, self.n_features)

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
    if fortran or len(shape) not in (2, 3):
        raise VaefastError(f"{path}: expected a C-ordered [N, D] or [N, H, W] array, got "
                           f"shape {shape}")
    n, d = shape[0], int(np.prod(shape[1:]))
    expected = offset + n * d * dtype.itemsize
    if path.stat().st_size < expected:
        raise VaefastError(f"{path}: truncated; header promises {expected} bytes, file has "
                           f"{path.stat().st_size}")
    return Source(spec, n, d, dtype, None, path, offset)


def _zarr(path: Path, spec: str) -> Source:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise VaefastError(f"{path}: not a readable zarr store ({e})") from None
    labels = None
    if isinstance(node, zarr.Group):
        keys = set(node.array_keys())
        key = next((k for k in ("X", "x", "data", "images") if k in keys), None)
        if key is None:
            raise VaefastError(f"{path}: zarr group has no array X (found {sorted(keys)})")
        ykey = next((k for k in ("y", "labels") if k in keys), None)
        labels = np.asarray(node[ykey][:]) if ykey else None
        node = node[key]
    if node.ndim not in (2, 3) or np.dtype(node.dtype).kind not in "uif":
        raise VaefastError(f"{path}: expected a numeric [N, D] zarr array, got {node.dtype} "
                           f"{node.shape}")
    n, d = node.shape[0], int(np.prod(node.shape[1:]))
    return Source(spec, n, d, np.dtype(node.dtype), labels, None, 0, node)


def open_source(spec: str) -> Source:
    """Open a data spec or file for slice-by-slice reading."""
    path = Path(spec.split(":", 1)[1] if spec.startswith(("npy:", "zarr:", "idx:")) else spec)
    if spec.startswith("zarr:") or spec.rstrip("/").endswith(".zarr"):
        if not path.exists():
            raise VaefastError(f"{path}: no such zarr store")
        return _zarr(path, spec)
    if (spec.startswith("npy:") or spec.endswith(".npy")) and path.is_file():
        return _npy(path, spec)
    if path.is_file() and path.name.endswith("-images-idx3-ubyte"):
        images = data.read_idx(path)  # validates magic and size; memmap only for the header
        labels_file = path.with_name(path.name.replace("-images-idx3-ubyte",
                                                       "-labels-idx1-ubyte"))
        labels = None
        if labels_file.is_file() or labels_file.with_name(labels_file.name + ".gz").is_file():
            labels = data.read(f"idx:{path}").y
        n, d = images.shape[0], int(np.prod(images.shape[1:]))
        del images
        return Source(spec, n, d, np.dtype(np.uint8), labels, path, 16)
    raw = data.read(spec)
    return Source(spec, raw.X.shape[0], raw.X.shape[1], raw.X.dtype, raw.y, None, 0,
                  np.asarray(raw.X))


def describe(source: Source) -> str:
    """One line: the input, its shape and dtype."""
    return f"{source.spec} ({source.n} x {source.n_features} {source.dtype})"

"""What a data reader returns: arrays in memory (``RawData``) or a ``Source`` that reads
any slice of a large input without loading it whole.

Rows come back in their stored sample shape ([n, D], [n, H, W], [n, H, W, C] or
[n, C, H, W]); the runtime lays them out for the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaefast.errors import VaefastError
from vaefast.layout import stored_image_shape


@dataclass
class RawData:
    """Unsplit arrays as stored: X may be a read-only memory map of uint8."""

    X: np.ndarray  # [N, *sample shape] as stored
    y: np.ndarray | None  # [N] int64
    image_shape: tuple[int, ...] | None
    label_names: list[str] | None
    scale: float  # divide X by this to get [0, 1]: 255 for integer pixels, 1 for floats
    spec: str


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
    label_names: list[str] | None = None
    columns: dict[str, np.ndarray] | None = None  # a table's other scalar columns, per row

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """How one sample is displayed ([H, W] or [H, W, C]), when it is an image."""
        return stored_image_shape(self.sample_shape)

    @property
    def ids(self) -> list[str] | None:
        """What identifies each row in its source (None: the row number does)."""
        return None

    def rows(self, start: int, stop: int, bad: dict[int, str] | None = None) -> np.ndarray:
        """Samples [start, stop) as stored (uint8 pixels or floats), [stop - start, *shape].
        (``bad`` is for sources of files, which can hold an undecodable one.)"""
        shape = (stop - start, *self.sample_shape)
        if self._array is not None:
            return np.asarray(self._array[start:stop]).reshape(shape)
        row_bytes = self.n_features * self.dtype.itemsize
        count = (stop - start) * self.n_features
        with open(self._path, "rb") as f:
            f.seek(self._offset + start * row_bytes)
            out = np.fromfile(f, dtype=self.dtype, count=count)
        if out.size != count:
            raise VaefastError(
                f"{self._path}: truncated at row {start}; the file is shorter than its header says"
            )
        return out.reshape(shape)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input: spec, shape, dtype, and a hash of its first and
        last rows (cheap, and catches a different file under the same name)."""
        if not self._fingerprint:
            h = hashlib.sha256()
            k = min(self.n, 256)
            h.update(np.ascontiguousarray(self.rows(0, k)).tobytes())
            h.update(np.ascontiguousarray(self.rows(self.n - k, self.n)).tobytes())
            self._fingerprint = {
                "spec": self.spec,
                "rows": self.n,
                "features": self.n_features,
                "dtype": str(self.dtype),
                "edge_sha256": h.hexdigest(),
            }
            if len(self.sample_shape) > 1:
                self._fingerprint["sample_shape"] = list(self.sample_shape)
        return self._fingerprint

    def start(self) -> None:
        """Start what reading needs ahead of the first rows (nothing, for arrays)."""

    def close(self) -> None:
        """Release what reading needed (nothing, for arrays)."""

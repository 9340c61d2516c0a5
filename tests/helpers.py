"""Helpers shared by the tests: small real files, the real CLI in a subprocess."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"


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


def write_mnist_folder(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False,
                       seed: int = 0) -> tuple[np.ndarray, ...]:
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
    return subprocess.run([sys.executable, "-m", "vaefast.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def embed_killed_midway(args: list[str], store: Path, timeout: float = 120) -> None:
    """Start `vaefast embed ARGS` and SIGKILL it once some, but not all, chunks of ``store``
    are done."""
    import os
    import signal
    import time

    import zarr

    proc = subprocess.Popen([sys.executable, "-m", "vaefast.cli", "embed", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            done = zarr.open_group(str(store), mode="r")["_progress/encoded"][:]
            if 2 <= done.sum() < len(done):
                break
        except Exception:  # the store does not exist yet
            pass
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

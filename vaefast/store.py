"""The embedding store: one zarr group per ``vaefast embed`` run.

Layout (``OUT.zarr``): ``mu``, ``logvar`` [N, *latent_shape] (flat [N, Z] or spatial
[N, C, h, w]; float32, or float16 when asked for) and ``labels`` [N] int64 when known,
chunked by rows and compressed (zarr's default codec); ``tsne`` [N, 2] float32 when asked for (plus ``tsne_reference``
and ``tsne_reference_index`` when it was mapped from a sample); ``_progress/encoded``
and ``_progress/placed``, one marker per row chunk, each its own zarr chunk (written
atomically by zarr) and written only after that chunk's data. The group attribute
``vaefast`` records the format, the model's sha256, the input's fingerprint, the
parameters, and ``complete: true`` once everything is written.

Stores are created in a temporary folder beside ``OUT`` through
:func:`vaefast.atomic.atomic_dir` (so they get the user's umask, like every other
output) and renamed into place; resuming reopens them in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vaefast.atomic import atomic_dir
from vaefast.errors import VaefastError

FORMAT = "vaefast-embeddings/1"
IDENTITY = ("model_sha256", "input", "params")  # attributes a resume must match


def _attrs(path: Path) -> dict[str, Any] | None:
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs).get("vaefast")
    except Exception:
        return None


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a vaefast embedding store (finished or not)."""
    return (_attrs(Path(path)) or {}).get("format") == FORMAT


DTYPES = ("float32", "float16")  # what mu and logvar may be stored as


def create(out: Path, attrs: dict[str, Any], n: int, latent_shape: tuple[int, ...],
           chunk_rows: int, labels=None, tsne: bool = False, force: bool = False,
           dtype: str = "float32") -> None:
    """Write an empty store at ``out`` (atomically; replacing ``out`` only with force)."""
    import zarr

    rows = min(chunk_rows, n)
    n_chunks = -(-n // chunk_rows)
    latent_shape = tuple(int(s) for s in latent_shape)
    with atomic_dir(out, force=force) as tmp:
        group = zarr.open_group(str(tmp), mode="a")
        for name in ("mu", "logvar"):
            group.create_array(name, shape=(n, *latent_shape), chunks=(rows, *latent_shape),
                               dtype=dtype, fill_value=0.0)
        if labels is not None:
            group.create_array("labels", shape=(n,), chunks=(rows,), dtype="int64",
                               fill_value=0)[:] = labels
        if tsne:
            group.create_array("tsne", shape=(n, 2), chunks=(rows, 2), dtype="float32",
                               fill_value=0.0)
        progress = group.create_group("_progress")
        for name in ("encoded", "placed"):
            progress.create_array(name, shape=(n_chunks,), chunks=(1,), dtype="uint8",
                                  fill_value=0)
        group.attrs["vaefast"] = {"format": FORMAT, **attrs, "complete": False}


def open_or_create(out: Path, attrs: dict[str, Any], n: int, latent_shape: tuple[int, ...],
                   chunk_rows: int, labels=None, tsne: bool = False, force: bool = False,
                   dtype: str = "float32"):
    """Reopen the store at ``out`` to resume it, or create it; return the zarr group.

    A path holding anything but a vaefast store is never touched; a store started with
    another model, input or parameters is refused, or replaced with ``force``.
    """
    import zarr

    replace = False
    if out.exists():
        existing = _attrs(out)
        if not existing or existing.get("format") != FORMAT:
            raise VaefastError(f"{out} exists and is not a vaefast embedding store; choose "
                               "another --out (nothing was touched)")
        differ = [k for k in IDENTITY if existing.get(k) != attrs[k]]
        if differ and not force:
            raise VaefastError(f"{out} was started with another {' and '.join(differ)}; "
                               "refusing to resume into it (use another --out, or --force "
                               "to replace)")
        replace = bool(differ)
    if replace or not out.exists():
        create(out, attrs, n, latent_shape, chunk_rows, labels, tsne, force=replace, dtype=dtype)
    return zarr.open_group(str(out), mode="r+")


def remove(out: Path) -> None:
    """Delete a vaefast store (and nothing else): for a run whose input can never finish."""
    import shutil

    if is_store(out):
        shutil.rmtree(out)


def mark_complete(group) -> None:
    """Flag a store as finished (written last)."""
    group.attrs["vaefast"] = dict(group.attrs["vaefast"]) | {"complete": True}


def open_embeddings(path: str | os.PathLike):
    """Open a finished embedding store read-only; an unfinished one is an error."""
    path = Path(path)
    if not path.exists():
        raise VaefastError(f"{path}: no such embedding store")
    attrs = _attrs(path)
    if attrs is None:
        raise VaefastError(f"{path}: not a zarr store")
    if attrs.get("format") != FORMAT:
        raise VaefastError(f"{path}: not a vaefast embedding store")
    if not attrs.get("complete"):
        raise VaefastError(f"{path}: incomplete (interrupted?); run the same embed command "
                           "again to finish it")
    import zarr

    return zarr.open_group(str(path), mode="r")

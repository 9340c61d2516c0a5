"""The embedding store: one zarr group per ``vaefast embed`` run.

Layout (``OUT.zarr``): ``mu``, ``logvar`` [N, *latent_shape] (flat [N, Z] or spatial
[N, C, h, w]; float32, or float16 when asked for) and ``labels`` [N] int64 when known
(-1: a file with no class), chunked by rows and compressed (zarr's default codec);
``ids`` [N] strings naming each row's file (inputs of encoded images) and ``skipped``
[N] strings, the reason a row's file could not be decoded ('' for the rows encoded; a
skipped row's ``mu``, ``logvar`` and ``tsne`` are NaN); ``tsne`` [N, 2] float32 when
asked for (plus ``tsne_reference`` and ``tsne_reference_index`` when it was mapped from
a sample); one [N] array per scalar column of a table input (numbers as float64, NaN
where null; strings; named as in the input, ``input_NAME`` where that name is one of
ours), listed with their input names in the ``columns`` attribute; ``_progress/encoded``
and ``_progress/placed``, one marker per row chunk, each its own zarr chunk (written
atomically by zarr) and written only after that chunk's data. The group attribute
``vaefast`` records the format, the model's sha256, the input's fingerprint, the
parameters, ``label_names`` when known, and ``complete: true`` once everything is
written. Only this module knows these names: embed, plot and the readers ask it.

Other tools read it as an xarray dataset: every array has named dimensions
(``latent_dims``; ``axis`` for map coordinates, ``reference`` for the reference map's
rows) and a ``description``; ``ids``, ``labels`` and ``skipped`` are listed as per-row
coordinates, ``labels`` carries ``label_names``; floats are filled with NaN and integers
with -1 (never a real value); a finished store's metadata is consolidated.

Stores are created in a temporary folder beside ``OUT`` through
:func:`vaefast.atomic.atomic_dir` (so they get the user's umask, like every other
output) and renamed into place; resuming reopens them in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vaefast.atomic import atomic_dir
from vaefast.errors import VaefastError
from vaefast.extras import require

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
SPATIAL_DIMS = ("channel", "height", "width")  # a spatial latent's axes after the row
# what each array holds, as xarray and other readers show it (the arrays' attributes)
DESCRIPTIONS = {
    "mu": "the encoder's posterior mean μ of each row, in latent space",
    "logvar": "the encoder's posterior log-variance log σ² of each row, in latent space",
    "labels": "each row's class index (-1: none)",
    "ids": "each row's source: the file or record it was read from",
    "skipped": "why a row's file could not be decoded ('' for the rows encoded)",
    "tsne": "each row's position on the 2-D exact t-SNE map of μ",
    "tsne_reference": "the exact t-SNE of the reference rows, which the others are placed on",
    "tsne_reference_index": "the rows the reference t-SNE map was fitted on",
}
COORDINATES = ("ids", "labels", "skipped")  # per-row facts xarray shows as coordinates
# names a user's column cannot take in the store or in the parquet export
RESERVED = {*DESCRIPTIONS, "_progress", "row", "id", "label", "label_name", "tsne_x", "tsne_y"}
RESERVED |= {"image"}


def column_name(name: str) -> str:
    """The name an input's column is stored and exported under."""
    return f"input_{name}" if name in RESERVED or name.startswith("_") else name


def latent_dims(latent_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The dimension names of μ and log σ²: (row, latent) flat, (row, channel, height,
    width) spatial."""
    return ("row", *(SPATIAL_DIMS if len(latent_shape) == 3 else ("latent",)))


def _array(group, name: str, dims: tuple[str, ...], description: str = "", **kwargs):
    """A data array with named dimensions and its description (xarray reads both)."""
    arr = group.create_array(name, dimension_names=dims, **kwargs)
    arr.attrs["description"] = description or DESCRIPTIONS[name]
    return arr


def create(
    out: Path,
    attrs: dict[str, Any],
    n: int,
    latent_shape: tuple[int, ...],
    chunk_rows: int,
    labels=None,
    tsne: bool = False,
    force: bool = False,
    dtype: str = "float32",
    ids: list[str] | None = None,
    columns: dict[str, np.ndarray] | None = None,
) -> None:
    """Write an empty store at ``out`` (atomically; replacing ``out`` only with force)."""
    import zarr

    rows = min(chunk_rows, n)
    n_chunks = -(-n // chunk_rows)
    latent_shape = tuple(int(s) for s in latent_shape)
    given = {"ids": ids, "labels": labels, "skipped": ids}
    stored = {column_name(c): c for c in columns or {}}
    coordinates = " ".join([k for k in COORDINATES if given[k] is not None] + list(stored))
    with atomic_dir(out, force=force) as tmp:
        group = zarr.open_group(str(tmp), mode="a")
        for name in ("mu", "logvar"):
            arr = _array(
                group,
                name,
                latent_dims(latent_shape),
                shape=(n, *latent_shape),
                chunks=(rows, *latent_shape),
                dtype=dtype,
                fill_value=np.nan,
            )
            if coordinates:
                arr.attrs["coordinates"] = coordinates
        if labels is not None:
            arr = _array(
                group, "labels", ("row",), shape=(n,), chunks=(rows,), dtype="int64", fill_value=-1
            )
            arr[:] = labels
            names = attrs.get("label_names")
            if names:
                arr.attrs["label_names"] = list(names)
        if ids is not None:
            _array(group, "ids", ("row",), shape=(n,), chunks=(rows,), dtype=str)[:] = np.asarray(
                ids, dtype=object
            )
            _array(group, "skipped", ("row",), shape=(n,), chunks=(rows,), dtype=str)
        for name, original in stored.items():
            values = columns[original]
            text = values.dtype == object
            _array(
                group,
                name,
                ("row",),
                f"the input's column {original!r}",
                shape=(n,),
                chunks=(rows,),
                dtype=str if text else "float64",
                fill_value="" if text else np.nan,
            )[:] = values
        if stored:
            attrs = attrs | {"columns": stored}
        if tsne:
            arr = _array(
                group,
                "tsne",
                ("row", "axis"),
                shape=(n, 2),
                chunks=(rows, 2),
                dtype="float32",
                fill_value=np.nan,
            )
            if coordinates:
                arr.attrs["coordinates"] = coordinates
        progress = group.create_group("_progress")
        for name in ("encoded", "placed"):
            progress.create_array(name, shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0)
        group.attrs["vaefast"] = {"format": FORMAT, **attrs, "complete": False}


def open_or_create(out: Path, attrs: dict[str, Any], force: bool = False, **layout: Any):
    """Reopen the store at ``out`` to resume it, or create it with ``create``'s ``layout``
    (n, latent_shape, chunk_rows, labels, ...); return the zarr group.

    A path holding anything but a vaefast store is never touched; a store started with
    another model, input or parameters is refused, or replaced with ``force``.
    """
    import zarr

    replace = False
    if out.exists():
        existing = _attrs(out)
        if not existing or existing.get("format") != FORMAT:
            raise VaefastError(
                f"{out} exists and is not a vaefast embedding store; choose "
                "another --out (nothing was touched)"
            )
        differ = [k for k in IDENTITY if existing.get(k) != attrs[k]]
        if differ and not force:
            was, now = existing.get("params") or {}, attrs["params"]
            changed = [
                f"{k} {was.get(k)} -> {now.get(k)}"
                for k in sorted({*was, *now})
                if was.get(k) != now.get(k)
            ]  # e.g. the engine a resume would mix in
            raise VaefastError(
                f"{out} was started with another {' and '.join(differ)}"
                f"{' (' + ', '.join(changed) + ')' if changed else ''}; "
                "refusing to resume into it (use another --out, or --force "
                "to replace)"
            )
        replace = bool(differ)
    if replace or not out.exists():
        create(out, attrs, force=replace, **layout)
    return zarr.open_group(str(out), mode="r+")


def remove(out: Path) -> None:
    """Delete a vaefast store (and nothing else): for a run whose input can never finish."""
    import shutil

    if is_store(out):
        shutil.rmtree(out)


def mark_complete(group) -> None:
    """Flag a store as finished (written last), with its metadata consolidated in one
    document, as xarray opens a store fastest."""
    import warnings

    import zarr

    group.attrs["vaefast"] = dict(group.attrs["vaefast"]) | {"complete": True}
    with warnings.catch_warnings():  # zarr's note that format 3 has no spec for it yet
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        zarr.consolidate_metadata(group.store)


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
        raise VaefastError(
            f"{path}: incomplete (interrupted?); run the same embed command again to finish it"
        )
    import zarr

    return zarr.open_group(str(path), mode="r")


def check_model(attrs: dict[str, Any], weights_sha256: str, path, model) -> None:
    """A store is read with the model that embedded it (its weights' sha256), or refused
    in one line naming both."""
    if attrs["model_sha256"] != weights_sha256:
        named = attrs.get("model") or f"weights sha256 {attrs['model_sha256'][:12]}…"
        raise VaefastError(
            f"{path} was embedded with another model ({named}), not {model}; open it with that one"
        )


def info(group) -> dict[str, Any]:
    """The store's ``vaefast`` attributes (format, model, input, params, ...)."""
    return dict(group.attrs["vaefast"])


def pending(group, stage: str) -> list[int]:
    """Row chunks not yet done at ``stage`` ("encoded" or "placed")."""
    return [int(c) for c in np.flatnonzero(np.asarray(group[f"_progress/{stage}"][:]) == 0)]


def write_chunk(
    out: str,
    chunk: int,
    start: int,
    mu: np.ndarray,
    logvar: np.ndarray,
    skipped: dict[int, str] | None = None,
) -> int:
    """Write one chunk's encodings (and why rows were skipped), then its marker (the
    marker only after the data); return the row count."""
    import zarr

    group = zarr.open_group(out, mode="r+")
    dtype = group["mu"].dtype
    stop = start + len(mu)
    group["mu"][start:stop] = mu.astype(dtype, copy=False)
    group["logvar"][start:stop] = logvar.astype(dtype, copy=False)
    if "skipped" in group:
        why = np.full(len(mu), "", dtype=object)
        for row, reason in (skipped or {}).items():
            why[row - start] = reason
        group["skipped"][start:stop] = why
    group["_progress/encoded"][chunk] = 1
    return len(mu)


def skipped_rows(group) -> dict[int, str]:
    """{row: reason} of the rows whose file could not be decoded (read a chunk at a time)."""
    if "skipped" not in group:
        return {}
    arr, out = group["skipped"], {}
    step = arr.chunks[0]
    for c in range(0, arr.shape[0], step):
        why = np.asarray(arr[c : c + step], dtype=object)
        out |= {c + int(k): str(why[k]) for k in np.flatnonzero(why != "")}
    return out


def read_mu(group, rows) -> np.ndarray:
    """μ of ``rows`` (a slice, or sorted row numbers gathered a chunk at a time, never the
    whole array in memory) as float32 [k, D], spatial latents flattened."""
    return read_rows(group, "mu", rows)


def read_rows(group, name: str, rows) -> np.ndarray:
    """``mu`` or ``logvar`` of ``rows`` as ``read_mu`` reads μ."""
    mu = group[name]
    if not isinstance(rows, np.ndarray):
        out = np.asarray(mu[rows], np.float32)
        return out.reshape(len(out), -1)
    step, n = mu.chunks[0], mu.shape[0]
    parts = [
        np.asarray(mu[c : c + step][rows[(rows >= c) & (rows < c + step)] - c], np.float32)
        for c in range(0, n, step)
        if ((rows >= c) & (rows < c + step)).any()
    ]
    return np.concatenate(parts).reshape(len(rows), -1)


def reference(group) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, positions) of a finished reference map, or None (a half-written one is
    dropped: the index is written last)."""
    if "tsne_reference_index" not in group:
        if "tsne_reference" in group:
            del group["tsne_reference"]
        return None
    return group["tsne_reference_index"][:], group["tsne_reference"][:]


def save_reference(group, index: np.ndarray, Y: np.ndarray) -> None:
    """Store the reference map: positions first, then the index that marks it done."""
    _array(
        group,
        "tsne_reference",
        ("reference", "axis"),
        shape=(len(index), 2),
        dtype="float64",
        chunks=(len(index), 2),
        fill_value=np.nan,
    )[:] = Y
    _array(
        group,
        "tsne_reference_index",
        ("reference",),
        shape=(len(index),),
        dtype="int64",
        chunks=(len(index),),
        fill_value=-1,
    )[:] = index


def write_positions(group, chunk: int, start: int, Y: np.ndarray) -> None:
    """Write one chunk's t-SNE positions, then its marker."""
    group["tsne"][start : start + len(Y)] = Y.astype(np.float32)
    group["_progress/placed"][chunk] = 1


def n_rows(group) -> int:
    return int(group["mu"].shape[0])


def input_columns(group) -> list[str]:
    """The stored names of the input's own columns (see ``column_name``), in input order."""
    return list(info(group).get("columns") or {})


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A finished store in memory: ``mu``, ``logvar`` (float32), ``labels``, ``tsne``,
    ``ids``, ``skipped`` ({row: reason}) — None where absent — and its ``attrs``."""
    group = open_embeddings(path)
    keys = set(group.array_keys())

    def get(name, dtype=None):
        return np.asarray(group[name][:], dtype) if name in keys else None

    return {
        "mu": get("mu", np.float32),
        "logvar": get("logvar", np.float32),
        "labels": get("labels"),
        "tsne": get("tsne"),
        "ids": None if "ids" not in keys else np.asarray(group["ids"][:], dtype=object),
        "skipped": skipped_rows(group),
        "attrs": info(group),
    }


EXPORT_FORMATS = ("parquet", "npy")


def export(
    path: str | os.PathLike,
    to: str,
    out: str | os.PathLike,
    force: bool = False,
    with_images: bool = False,
) -> dict[str, Any]:
    """Write a finished store's rows for the tools downstream, a zarr chunk at a time, in
    the store's own names:
    ``parquet`` (one file, a row per row: ``row``, ``id`` — the file or record it came
    from, or its row number for array inputs — ``label`` and ``label_name`` where known,
    ``mu`` and ``logvar`` as float32 lists (flattened for spatial latents), ``tsne_x`` and
    ``tsne_y``, ``skipped``; its schema's ``vaefast`` metadata: latent shape, label names,
    the model's sha256, the input and its preprocessing) or ``npy`` (a folder holding one
    memory-mappable file per array of the store: ``mu.npy``, ``logvar.npy``,
    ``labels.npy``, ``tsne.npy``, ``ids.npy``, ``skipped.npy``). Written to a temporary
    path and renamed. Returns {rows, columns}.

    ``with_images`` (parquet only) adds ``image``: each row's input as a PNG thumbnail, read
    back from the recorded input, in the struct of Hugging Face ``datasets``' Image feature
    (declared in the schema's ``huggingface`` metadata), so ``datasets`` decodes it and
    embedding-atlas shows it."""
    if to not in EXPORT_FORMATS:
        raise VaefastError(f"unknown format {to!r}; use {' or '.join(EXPORT_FORMATS)}")
    if to == "parquet":
        require("parquet", "--to parquet")
    elif with_images:
        raise VaefastError("--with-images needs --to parquet (.npy holds arrays only)")
    group = open_embeddings(path)
    if with_images:
        from vaefast.embedding.thumbnails import thumbnailer

        thumbnails = thumbnailer(info(group))
    n, step = n_rows(group), group["mu"].chunks[0]
    columns = _exported(group)

    def chunks():
        for c in range(0, n, step):
            part = {k: np.asarray(group[k][c : c + step]) for k in columns}
            flat = {k: part[k].astype(np.float32).reshape(len(part[k]), -1) for k in LATENTS}
            rows = np.arange(c, c + len(part["mu"]), dtype=np.int64)
            if with_images:
                flat["image"] = thumbnails(rows)
            yield rows, part | flat

    if to == "parquet":
        from vaefast.atomic import atomic_file, check_new_output

        check_new_output(Path(out), force)
        with atomic_file(out) as tmp:
            attrs = info(group)
            _write_parquet(
                str(tmp), chunks(), group["mu"].shape, attrs.get("label_names"), _meta(group)
            )
        images = ["image"] if with_images else []
        return {"rows": n, "columns": _columns(columns, attrs.get("label_names")) + images}

    widths = {
        k: max(
            [1]
            + [
                len(str(v))
                for c in range(0, n, step)
                for v in np.asarray(group[k][c : c + step], dtype=object)
            ]
        )
        for k in columns
        if group[k].dtype.kind in "OUT" or k in ("ids", "skipped")
    }  # fixed-width strings in .npy
    with atomic_dir(out, force=force) as tmp:
        _write_npy(tmp, ((rows[0], part) for rows, part in chunks()), n, widths)
    return {"rows": n, "columns": columns}


def parquet_of_rows(group, rows: np.ndarray) -> bytes:
    """Some rows of a finished store (sorted row numbers) as one parquet file, with the
    columns and metadata of ``export``'s: what the explorer's selection downloads."""
    require("parquet", "a parquet download")
    import pyarrow as pa

    if not len(rows):
        raise VaefastError("no rows selected")
    columns = _exported(group)
    step, attrs = group["mu"].chunks[0], info(group)

    def chunks():
        for c in range(0, n_rows(group), step):
            pick = rows[(rows >= c) & (rows < c + step)]
            if len(pick):
                part = {k: np.asarray(group[k][c : c + step])[pick - c] for k in columns}
                flat = {k: part[k].astype(np.float32).reshape(len(pick), -1) for k in LATENTS}
                yield pick.astype(np.int64), part | flat

    sink = pa.BufferOutputStream()
    _write_parquet(sink, chunks(), group["mu"].shape, attrs.get("label_names"), _meta(group))
    return sink.getvalue().to_pybytes()


def _exported(group) -> list[str]:
    """The arrays an export writes, in its column order: ours, then the input's columns."""
    keys = set(group.array_keys())
    ours = [k for k in ("ids", "labels", "mu", "logvar", "tsne", "skipped") if k in keys]
    return ours + input_columns(group)


def _meta(group) -> dict[str, Any]:
    """The ``vaefast`` metadata of a parquet file written from ``group``."""
    attrs = info(group)
    return {
        "format": attrs.get("format"),
        "latent_shape": list(group["mu"].shape[1:]),
        "label_names": attrs.get("label_names"),
        "model_sha256": attrs.get("model_sha256"),
        "input": attrs.get("input"),
    }


LATENTS = ("mu", "logvar")


def _columns(arrays: list[str], label_names) -> list[str]:
    """The parquet columns of a store holding ``arrays``."""
    per_row = {
        "labels": ["label"] + ["label_name"] * bool(label_names),
        "tsne": ["tsne_x", "tsne_y"],
    }
    return ["row", "id"] + [c for a in arrays if a != "ids" for c in per_row.get(a, [a])]


def _write_parquet(where, chunks, mu_shape, label_names, meta: dict) -> None:
    """Write ``chunks`` — (row numbers, {array: values}) — to ``where`` (a path or an
    Arrow output stream) as parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vaefast.embedding.thumbnails import IMAGE_FEATURE

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

    d = int(np.prod(mu_shape[1:]))
    names = pa.array(label_names or [], pa.string())
    writer = None
    try:
        for rows, part in chunks:
            ids = part["ids"].astype(object) if "ids" in part else rows.astype(str)
            cols = {"row": pa.array(rows), "id": pa.array(ids, pa.string())}
            if "labels" in part:
                cols["label"] = pa.array(part["labels"])
                if label_names:  # dictionary-encoded: the names once, an index per row
                    known = part["labels"] >= 0
                    index = pa.array(np.where(known, part["labels"], 0), mask=~known)
                    cols["label_name"] = pa.DictionaryArray.from_arrays(index, names)
            for name in LATENTS:
                cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(part[name].ravel()), d)
            if "tsne" in part:
                cols["tsne_x"] = pa.array(part["tsne"][:, 0])
                cols["tsne_y"] = pa.array(part["tsne"][:, 1])
            if "skipped" in part:
                cols["skipped"] = pa.array(part["skipped"].astype(object), pa.string())
            for name in [k for k in part if k not in {*LATENTS, *DESCRIPTIONS, "image"}]:
                values = part[name]  # one of the input's columns
                text = values.dtype.kind in "OUT"
                cols[name] = pa.array(values.astype(object) if text else values)
            schema_meta = {"vaefast": json.dumps(meta)}
            if "image" in part:
                cols["image"] = pa.array(
                    [None if b is None else {"bytes": b, "path": None} for b in part["image"]],
                    image_type,
                )
                features = {"image": IMAGE_FEATURE}
                schema_meta["huggingface"] = json.dumps({"info": {"features": features}})
            table = pa.table(cols).replace_schema_metadata(schema_meta)
            if writer is None:
                writer = pq.ParquetWriter(where, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _write_npy(folder: Path, chunks, n: int, widths: dict[str, int]) -> None:
    from numpy.lib.format import open_memmap

    files: dict[str, np.ndarray] = {}
    for c, part in chunks:
        for name, arr in part.items():
            if name in widths:
                arr = arr.astype(f"<U{widths[name]}")
            if name not in files:
                files[name] = open_memmap(
                    folder / f"{name}.npy", "w+", arr.dtype, (n, *arr.shape[1:])
                )
            files[name][c : c + len(arr)] = arr
    for m in files.values():
        m.flush()

"""Batch-embed a dataset through an exported encoder into a zarr store: streaming,
bounded memory, resumable after any kill, optionally distributed on Dask.

Store layout (``OUT.zarr``): ``mu``, ``logvar`` [N, Z] float32 and ``labels`` [N] int64
when known, chunked by ``chunk_rows``; ``tsne`` [N, 2] float32 with ``--tsne``. Each
chunk is one task that writes only its own zarr chunks and then its marker in
``_progress`` (one zarr chunk per marker, written atomically), so a killed run resumes
from the finished chunks. The group's ``vaefast`` attribute records the model's sha256,
the input's fingerprint and the parameters, and ``complete: true`` only once everything
is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vaefast import runtime
from vaefast.errors import VaefastError
from vaefast.sources import Source, describe, open_source

FORMAT = "vaefast-embeddings/1"
DEFAULT_CHUNK_ROWS = 65536
DEFAULT_BATCH = 8192
DEFAULT_TSNE_MAX = 10000  # exact t-SNE on all rows up to this N; above, reference + transform
_SESSIONS: dict[tuple, runtime.ExportedVAE] = {}  # one ONNX Runtime session per process
_SOURCES: dict[str, Source] = {}  # and one opened input (built-in specs load once)


def _model(model_dir: str, threads: int | None) -> runtime.ExportedVAE:
    key = (str(model_dir), threads)
    if key not in _SESSIONS:
        _SESSIONS[key] = runtime.load(model_dir, providers="auto", threads=threads, spin=False)
    return _SESSIONS[key]


def _source(spec: str) -> Source:
    if spec not in _SOURCES:
        _SOURCES.clear()  # keep at most one input in memory
        _SOURCES[spec] = open_source(spec)
    return _SOURCES[spec]


def _chunk_bounds(chunk: int, chunk_rows: int, n: int) -> tuple[int, int]:
    return chunk * chunk_rows, min((chunk + 1) * chunk_rows, n)


def _write_chunk(out: str, chunk: int, start: int, mu: np.ndarray, logvar: np.ndarray) -> int:
    """Write one chunk's encodings, then its marker (the marker only after the data)."""
    import zarr

    group = zarr.open_group(out, mode="r+")
    group["mu"][start:start + len(mu)] = mu
    group["logvar"][start:start + len(mu)] = logvar
    group["_progress/encoded"][chunk] = 1
    return len(mu)


def encode_chunk(model_dir: str, spec: str, out: str, chunk: int, chunk_rows: int,
                 batch_size: int, threads: int | None = None) -> int:
    """Encode rows of chunk ``chunk`` and write them and their marker; return the row count.

    A plain function of plain arguments, so Dask can run it on any worker: the ONNX
    Runtime session and the input are opened there (sessions cannot be pickled).
    """
    vae = _model(model_dir, threads)
    source = _source(spec)
    start, stop = _chunk_bounds(chunk, chunk_rows, source.n)
    mu, logvar = vae.encode(source.rows(start, stop), batch_size=batch_size)
    return _write_chunk(out, chunk, start, mu, logvar)


def _encode_pipelined(model_dir: str, spec: str, out: str, todo: list[int], chunk_rows: int,
                      batch_size: int, threads: int | None, bar) -> None:
    """The single-process path: while ONNX Runtime encodes chunk k (it releases the GIL),
    one thread reads chunk k+1 and another writes chunk k-1."""
    from concurrent.futures import ThreadPoolExecutor

    vae, source = _model(model_dir, threads), _source(spec)
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        def read(chunk: int):
            return source.rows(*_chunk_bounds(chunk, chunk_rows, source.n))

        pending_read = reader.submit(read, todo[0]) if todo else None
        pending_write = None
        for k, chunk in enumerate(todo):
            rows = pending_read.result()
            if k + 1 < len(todo):
                pending_read = reader.submit(read, todo[k + 1])
            mu, logvar = vae.encode(rows, batch_size=batch_size)
            del rows
            if pending_write is not None:
                bar.update(pending_write.result())
            start = _chunk_bounds(chunk, chunk_rows, source.n)[0]
            pending_write = writer.submit(_write_chunk, out, chunk, start, mu, logvar)
        if pending_write is not None:
            bar.update(pending_write.result())


def _expected_attrs(vae: runtime.ExportedVAE, source: Source, chunk_rows: int,
                    tsne: bool, tsne_max: int, seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "model": str(vae.folder), "model_sha256": vae.meta["weights_sha256"],
            "input": source.fingerprint(),
            "params": {"chunk_rows": chunk_rows, "tsne": tsne, "tsne_max": tsne_max,
                       "seed": seed}}


def _create_store(out: Path, attrs: dict, source: Source, latent_dim: int,
                  chunk_rows: int, tsne: bool) -> None:
    """Build the empty store beside ``out`` and rename it into place."""
    import zarr

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        group = zarr.open_group(str(tmp), mode="w")
        n, rows = source.n, min(chunk_rows, source.n)
        n_chunks = -(-n // chunk_rows)
        for name in ("mu", "logvar"):
            group.create_array(name, shape=(n, latent_dim), chunks=(rows, latent_dim),
                               dtype="float32", fill_value=0.0)
        if source.labels is not None:
            labels = group.create_array("labels", shape=(n,), chunks=(rows,), dtype="int64",
                                        fill_value=0)
            labels[:] = source.labels
        if tsne:
            group.create_array("tsne", shape=(n, 2), chunks=(rows, 2), dtype="float32",
                               fill_value=0.0)
        progress = group.create_group("_progress")
        for name in ("encoded", "placed"):
            progress.create_array(name, shape=(n_chunks,), chunks=(1,), dtype="uint8",
                                  fill_value=0)
        group.attrs["vaefast"] = attrs | {"complete": False}
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _open_or_create(out: Path, attrs: dict, source: Source, latent_dim: int, chunk_rows: int,
                    tsne: bool, force: bool):
    import zarr

    if out.exists():
        try:
            existing = dict(zarr.open_group(str(out), mode="r").attrs).get("vaefast")
        except Exception:
            existing = None
        if not existing or existing.get("format") != FORMAT:
            raise VaefastError(f"{out} exists and is not a vaefast embedding store; choose "
                               "another --out (nothing was touched)")
        same = {k: existing.get(k) for k in ("model_sha256", "input", "params")} == \
            {k: attrs[k] for k in ("model_sha256", "input", "params")}
        if not same and not force:
            what = [k for k in ("model_sha256", "input", "params") if existing.get(k) != attrs[k]]
            raise VaefastError(f"{out} was started with another {' and '.join(what)}; refusing "
                               "to resume into it (use another --out, or --force to replace)")
        if not same:
            shutil.rmtree(out)
    if not out.exists():
        _create_store(out, attrs, source, latent_dim, chunk_rows, tsne)
    return zarr.open_group(str(out), mode="r+")


def embed(model_dir: str | os.PathLike, input: str, out: str | os.PathLike, *,
          batch_size: int = DEFAULT_BATCH, chunk_rows: int = DEFAULT_CHUNK_ROWS,
          tsne: bool = False, tsne_max: int = DEFAULT_TSNE_MAX, seed: int = 0,
          scheduler: str | None = None, workers: int = 2, threads: int | None = None,
          force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Embed every row of ``input`` through the exported encoder into the zarr store ``out``.

    Runs again after an interruption continue from the finished chunks and give the
    same result as an uninterrupted run. ``scheduler``: None (this process), ``"local"``
    (a dask.distributed LocalCluster of ``workers`` processes) or a ``tcp://`` address.
    Returns figures of the run (rows, seconds, rows/s, chunks skipped).
    """
    from tqdm.auto import tqdm

    for name, value in (("batch size", batch_size), ("chunk rows", chunk_rows),
                        ("tsne_max", tsne_max)):
        if value < 1:
            raise VaefastError(f"{name} must be >= 1, got {value}")
    out = Path(out)
    vae = _model(str(model_dir), threads)
    _SOURCES.pop(input, None)  # the file may have changed since this process last read it
    source = _source(input)
    if source.n_features != vae.input_dim:
        raise VaefastError(f"{describe(source)} has {source.n_features} features; the model "
                           f"expects {vae.input_dim}")
    attrs = _expected_attrs(vae, source, chunk_rows, tsne, tsne_max, seed)
    group = _open_or_create(out, attrs, source, vae.latent_dim, chunk_rows, tsne, force)
    if group.attrs["vaefast"].get("complete"):
        return {"rows": source.n, "seconds": 0.0, "rows_per_s": None, "already_complete": True}
    done = np.asarray(group["_progress/encoded"][:])
    todo = [int(c) for c in np.flatnonzero(done == 0)]
    skipped_rows = sum(min(chunk_rows, source.n - c * chunk_rows) for c in np.flatnonzero(done))
    bar = tqdm(total=source.n, initial=skipped_rows, unit="rows", unit_scale=True,
               desc="embed", disable=not progress, smoothing=0.1)
    t0 = time.perf_counter()
    args = (str(model_dir), input, str(out))
    try:
        if scheduler is None:
            _encode_pipelined(*args, todo, chunk_rows, batch_size, threads, bar)
        else:
            _run_dask(scheduler, workers, args, todo, chunk_rows, batch_size, bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    stats = {"rows": source.n, "rows_encoded": source.n - skipped_rows, "seconds": seconds,
             "rows_per_s": (source.n - skipped_rows) / seconds if seconds > 0 else None,
             "chunks_resumed": len(done) - len(todo)}
    if tsne:
        stats["tsne"] = _map(group, tsne_max, seed, chunk_rows, progress)
    group.attrs["vaefast"] = dict(group.attrs["vaefast"]) | {"complete": True}
    return stats


def _run_dask(scheduler: str, workers: int, args: tuple, todo: list[int], chunk_rows: int,
              batch_size: int, bar) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise VaefastError("--scheduler needs Dask: pip install 'vaefast[dask]'") from None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    elif scheduler.startswith("tcp://"):
        cluster, client = None, Client(scheduler)
    else:
        raise VaefastError(f"unknown scheduler {scheduler!r}; use local or tcp://HOST:PORT")
    try:
        futures = [client.submit(encode_chunk, *args, c, chunk_rows, batch_size, 1,
                                 key=f"vaefast-encode-{c}-{args[2]}", pure=False) for c in todo]
        for future in as_completed(futures):
            bar.update(future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _map(group, tsne_max: int, seed: int, chunk_rows: int, progress: bool) -> dict[str, Any]:
    """Exact t-SNE of mu; above ``tsne_max`` rows, of a seeded reference sample, with the
    other rows placed by ``transform`` chunk by chunk (each chunk resumable)."""
    from vaefast.tsne import TSNE
    from vaefast.tsne.transform import place

    n = group["mu"].shape[0]
    placed = group["_progress/placed"]
    t0 = time.perf_counter()
    if n <= tsne_max:
        stats = {"method": "exact", "n": n}
        if not placed[:].all():
            tsne = TSNE(random_state=seed, progress=progress).fit(group["mu"][:])
            group["tsne"][:] = tsne.embedding_.astype(np.float32)
            placed[:] = 1
            stats |= {"kl": tsne.kl_divergence_, "iterations": tsne.n_iter_ + 1,
                      "pairs_per_s": tsne.timings_["pairs_per_s"]}
        return stats | {"seconds": time.perf_counter() - t0}
    if "tsne_reference" not in group:
        index = np.sort(np.random.default_rng(seed).choice(n, tsne_max, replace=False))
        X_ref = group["mu"].get_orthogonal_selection((index, slice(None)))
        tsne = TSNE(random_state=seed, progress=progress).fit(X_ref)
        ref = group.create_array("tsne_reference", shape=(tsne_max, 2), dtype="float64",
                                 chunks=(tsne_max, 2), fill_value=0.0)
        ref[:] = tsne.embedding_
        idx = group.create_array("tsne_reference_index", shape=(tsne_max,), dtype="int64",
                                 chunks=(tsne_max,), fill_value=0)
        idx[:] = index  # written last: its presence means the reference is complete
    index = group["tsne_reference_index"][:]
    Y_ref = group["tsne_reference"][:]
    X_ref = group["mu"].get_orthogonal_selection((index, slice(None)))
    position = {int(r): k for k, r in enumerate(index)}
    for chunk in np.flatnonzero(placed[:] == 0):
        start, stop = int(chunk) * chunk_rows, min((int(chunk) + 1) * chunk_rows, n)
        rows = np.arange(start, stop)
        in_ref = np.isin(rows, index)
        out = np.empty((stop - start, 2))
        out[in_ref] = Y_ref[[position[int(r)] for r in rows[in_ref]]]
        if (~in_ref).any():
            out[~in_ref] = place(group["mu"][start:stop][~in_ref], X_ref, Y_ref)
        group["tsne"][start:stop] = out.astype(np.float32)
        placed[chunk] = 1
    return {"method": "reference+transform", "n": n, "reference": tsne_max,
            "seconds": time.perf_counter() - t0}


def open_embeddings(path: str | os.PathLike):
    """Open a finished embedding store read-only; an unfinished one is an error."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs).get("vaefast") or {}
    except Exception:
        raise VaefastError(f"{path}: not a zarr store") from None
    if attrs.get("format") != FORMAT:
        raise VaefastError(f"{path}: not a vaefast embedding store")
    if not attrs.get("complete"):
        raise VaefastError(f"{path}: incomplete (interrupted?); run the same embed command "
                           "again to finish it")
    return group

"""Batch-embed a dataset through an exported encoder into a zarr store: streaming,
bounded memory, resumable after any kill, optionally distributed on Dask.

The store's format lives in ``vaefast.store``. Each row chunk is one task that writes
only its own zarr chunks and then its marker, so a killed run resumes from the finished
chunks and ends identical to an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vaefast import runtime, store
from vaefast.errors import BadRows, VaefastError
from vaefast.sources import Source, open_source

CHUNK_BYTES = 1 << 28  # default rows per chunk: at most this many bytes of float32 input
BATCH_BYTES = 1 << 25  # default rows per ONNX Runtime call: this many bytes of input

_SESSIONS: dict[tuple, runtime.ExportedVAE] = {}  # one ONNX Runtime session per process
_SOURCES: dict[str, Source] = {}  # and one opened input (built-in specs load once)


def _model(model_dir: str, threads: int | None, variant: str = "fp32",
           providers: str = "auto") -> runtime.ExportedVAE:
    key = (str(model_dir), threads, variant, providers)
    if key not in _SESSIONS:
        _SESSIONS[key] = runtime.load(model_dir, providers=providers, threads=threads,
                                      variant=variant, spin=False)
    return _SESSIONS[key]


def _source(spec: str) -> Source:
    if spec not in _SOURCES:
        _SOURCES.clear()  # keep at most one input in memory
        _SOURCES[spec] = open_source(spec)
    return _SOURCES[spec]


def _chunk_bounds(chunk: int, chunk_rows: int, n: int) -> tuple[int, int]:
    return chunk * chunk_rows, min((chunk + 1) * chunk_rows, n)


def default_rows(sample_values: int, budget: int, cap: int) -> int:
    """A power of two of rows whose float32 inputs fit ``budget`` bytes, at most ``cap``
    (so 28x28 digits keep 65,536-row chunks and 256x256 colour images get 256)."""
    rows = max(1, budget // (4 * max(sample_values, 1)))
    return min(cap, 1 << (rows.bit_length() - 1))


def _encode_rows(vae: runtime.ExportedVAE, rows: np.ndarray, start: int, spec: str,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode rows read from ``start``; a bad value is named by its row in the input."""
    try:
        return vae.encode(rows, batch_size=batch_size)
    except BadRows as e:
        raise BadRows(f"{spec}: {e.reason} at row {start + e.row}", start + e.row,
                      e.reason) from None


def _write_chunk(out: str, chunk: int, start: int, mu: np.ndarray, logvar: np.ndarray) -> int:
    """Write one chunk's encodings, then its marker (the marker only after the data)."""
    import zarr

    group = zarr.open_group(out, mode="r+")
    dtype = group["mu"].dtype
    group["mu"][start:start + len(mu)] = mu.astype(dtype, copy=False)
    group["logvar"][start:start + len(mu)] = logvar.astype(dtype, copy=False)
    group["_progress/encoded"][chunk] = 1
    return len(mu)


def _worker_threads() -> int | None:
    """The thread count of the Dask worker running this task (None outside a worker)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", worker)
    return int(getattr(state, "nthreads", 0)) or None


def encode_chunk(model_dir: str, spec: str, out: str, chunk: int, chunk_rows: int,
                 batch_size: int, threads: int | None = None, variant: str = "fp32",
                 providers: str = "auto") -> int:
    """Encode rows of chunk ``chunk`` and write them and their marker; return the row count.

    A plain function of plain arguments, so Dask can run it on any worker: the ONNX
    Runtime session and the input are opened there (sessions cannot be pickled), with
    ``threads`` intra-op threads, by default the worker's own thread count.
    """
    vae = _model(model_dir, threads or _worker_threads(), variant, providers)
    source = _source(spec)
    start, stop = _chunk_bounds(chunk, chunk_rows, source.n)
    mu, logvar = _encode_rows(vae, source.rows(start, stop), start, spec, batch_size)
    return _write_chunk(out, chunk, start, mu, logvar)


def _encode_pipelined(vae: runtime.ExportedVAE, source: Source, out: str, todo: list[int],
                      chunk_rows: int, batch_size: int, bar) -> None:
    """The single-process path: while ONNX Runtime encodes chunk k (it releases the GIL),
    one thread reads chunk k+1 and another writes chunk k-1."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        def read(chunk: int):
            return source.rows(*_chunk_bounds(chunk, chunk_rows, source.n))

        pending_read = reader.submit(read, todo[0]) if todo else None
        pending_write = None
        for k, chunk in enumerate(todo):
            rows = pending_read.result()
            if k + 1 < len(todo):
                pending_read = reader.submit(read, todo[k + 1])
            start = _chunk_bounds(chunk, chunk_rows, source.n)[0]
            mu, logvar = _encode_rows(vae, rows, start, source.spec, batch_size)
            del rows
            if pending_write is not None:
                bar.update(pending_write.result())
            pending_write = writer.submit(_write_chunk, out, chunk, start, mu, logvar)
        if pending_write is not None:
            bar.update(pending_write.result())


def embed(model_dir: str | os.PathLike, input: str, out: str | os.PathLike, *,
          batch_size: int | None = None, chunk_rows: int | None = None,
          dtype: str = "float32", tsne: bool = False,
          tsne_max: int = 10_000, tsne_transform: str = "exact", seed: int = 0, scheduler: str | None = None,
          workers: int = 2, threads: int | None = None, variant: str = "fp32",
          providers: str = "auto", force: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Embed every row of ``input`` through the exported encoder into the zarr store ``out``.

    Runs again after an interruption continue from the finished chunks and give the
    same result as an uninterrupted run. ``scheduler``: None (this process), ``"local"``
    (a dask.distributed LocalCluster of ``workers`` one-thread processes) or a ``tcp://``
    address (each task uses its worker's thread count). ``threads``: ONNX Runtime and
    t-SNE threads (default: all cores). ``variant`` (fp32, int8, fp16) and ``providers``
    pick the exported model run; both are recorded in the store. With ``tsne``, an exact
    t-SNE map of ``mu`` is added (above ``tsne_max`` rows: of a seeded sample, the rest
    placed by transform, ``tsne_transform`` naming how: "exact" or the opt-in
    "interpolated"). ``mu`` and ``logvar`` are stored [N, *latent_shape] as
    ``dtype`` (float32, or float16 at half the size: latents cached for diffusion
    training). ``batch_size`` and ``chunk_rows`` default to powers of two sized to the
    input (8,192 and 65,536 for 28x28 digits; fewer for large images). A NaN, inf or
    out-of-range input value stops the run with one line naming its row and removes the
    store, which could never finish. Returns figures of the run (rows, seconds, rows/s,
    chunks skipped).
    """
    from tqdm.auto import tqdm

    if dtype not in store.DTYPES:
        raise VaefastError(f"unknown dtype {dtype!r}; use {' or '.join(store.DTYPES)}")
    out = Path(out)
    vae = _model(str(model_dir), threads, variant, providers)
    _SOURCES.pop(input, None)  # the file may have changed since this process last read it
    source = _source(input)
    if not source.n:
        raise VaefastError(f"{input}: no rows to embed")
    sample = vae.check_inputs(source.rows(0, 1)).shape[1:]  # a layout mismatch: refused now
    latent_shape = vae.latent_shape_for(sample)
    values = int(np.prod(sample))
    batch_size = default_rows(values, BATCH_BYTES, 8192) if batch_size is None else batch_size
    chunk_rows = default_rows(values, CHUNK_BYTES, 65536) if chunk_rows is None else chunk_rows
    for name, value in (("batch size", batch_size), ("chunk rows", chunk_rows),
                        ("tsne_max", tsne_max)):
        if value < 1:
            raise VaefastError(f"{name} must be >= 1, got {value}")
    if tsne:  # too few rows: refused before encoding (t-SNE imports only when asked for)
        from vaefast.tsne.mapping import reference_rows
        from vaefast.tsne.transform import placement

        reference_rows(source.n, tsne_max, seed)
        placement(tsne_transform)
    attrs = {"model": str(vae.folder), "model_sha256": vae.meta["weights_sha256"],
             "input": source.fingerprint(),
             "params": {"chunk_rows": chunk_rows, "tsne": tsne, "tsne_max": tsne_max,
                        "seed": seed, "variant": variant, "dtype": dtype} |
                       ({"tsne_transform": tsne_transform} if tsne else {}),
             "latent_shape": list(latent_shape), "providers": vae.providers}
    group = store.open_or_create(out, attrs, source.n, latent_shape, chunk_rows,
                                 source.labels, tsne, force, dtype)
    if group.attrs["vaefast"].get("complete"):
        return {"rows": source.n, "seconds": 0.0, "rows_per_s": None, "already_complete": True}
    done = np.asarray(group["_progress/encoded"][:])
    todo = [int(c) for c in np.flatnonzero(done == 0)]
    skipped_rows = sum(min(chunk_rows, source.n - c * chunk_rows) for c in np.flatnonzero(done))
    bar = tqdm(total=source.n, initial=skipped_rows, unit="rows", unit_scale=True,
               desc="embed", disable=not progress, smoothing=0.1)
    t0 = time.perf_counter()
    try:
        if scheduler is None:
            _encode_pipelined(vae, source, str(out), todo, chunk_rows, batch_size, bar)
        else:
            _run_dask(scheduler, workers, (str(model_dir), input, str(out)), todo,
                      chunk_rows, batch_size, threads, variant, providers, bar)
    except BadRows as e:
        store.remove(out)
        raise VaefastError(f"{e}; clean the input first ({out} was removed: it could "
                           "never finish)") from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    stats = {"rows": source.n, "rows_encoded": source.n - skipped_rows, "seconds": seconds,
             "rows_per_s": (source.n - skipped_rows) / seconds if seconds > 0 else None,
             "chunks_resumed": len(done) - len(todo), "variant": variant,
             "providers": vae.providers}
    if tsne:  # the map needs no model: its session and buffers go first (peak memory)
        del vae
        _SESSIONS.clear()
        stats["tsne"] = _map(group, tsne_max, seed, chunk_rows, threads, progress,
                             tsne_transform)
    store.mark_complete(group)
    return stats


def _run_dask(scheduler: str, workers: int, args: tuple, todo: list[int], chunk_rows: int,
              batch_size: int, threads: int | None, variant: str, providers: str,
              bar) -> None:
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
        futures = [client.submit(encode_chunk, *args, c, chunk_rows, batch_size, threads,
                                 variant, providers, key=f"vaefast-encode-{c}-{args[2]}",
                                 pure=False) for c in todo]
        for future in as_completed(futures):
            bar.update(future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _map(group, tsne_max: int, seed: int, chunk_rows: int, threads: int | None,
         progress: bool, method: str = "exact") -> dict[str, Any]:
    """The t-SNE map of ``mu`` by ``vaefast.tsne.mapping``'s rule, stored resumably: the
    reference map first (its index written last), then placed rows chunk by chunk."""
    from vaefast.tsne.threads import numba_threads
    from vaefast.tsne.mapping import fit_reference, place_chunks, reference_rows

    n = group["mu"].shape[0]
    placed = group["_progress/placed"]

    def means(rows) -> np.ndarray:  # [k, D] float32, spatial latents flattened
        if not isinstance(rows, np.ndarray):
            mu = np.asarray(group["mu"][rows], np.float32)
            return mu.reshape(len(mu), -1)
        # sorted rows, gathered a zarr chunk at a time (never the whole array in memory)
        step = group["mu"].chunks[0]
        parts = [np.asarray(group["mu"][c:c + step][rows[(rows >= c) & (rows < c + step)] - c],
                            np.float32) for c in range(0, n, step)
                 if ((rows >= c) & (rows < c + step)).any()]
        return np.concatenate(parts).reshape(len(rows), -1)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    stats: dict[str, Any] = {"method": "exact" if n <= tsne_max else "reference+transform",
                             "n": n}
    if "tsne_reference_index" not in group:
        if "tsne_reference" in group:  # killed before the index was written: redo it
            del group["tsne_reference"]
        index = reference_rows(n, tsne_max, seed)
        tsne = fit_reference(means(index), seed, threads, progress)
        ref = group.create_array("tsne_reference", shape=(len(index), 2), dtype="float64",
                                 chunks=(len(index), 2), fill_value=0.0)
        ref[:] = tsne.embedding_
        group.create_array("tsne_reference_index", shape=(len(index),), dtype="int64",
                           chunks=(len(index),), fill_value=0)[:] = index  # written last
        stats |= {"kl": tsne.kl_divergence_, "iterations": tsne.n_iter_ + 1,
                  "pairs_per_s": tsne.timings_["pairs_per_s"], "reference_rows": len(index)}
    t1 = time.perf_counter()
    index = group["tsne_reference_index"][:]
    Y_ref = group["tsne_reference"][:]
    X_ref = means(index)
    todo = [int(c) for c in np.flatnonzero(placed[:] == 0)]

    def new_rows(start: int, stop: int) -> int:  # rows of [start, stop) not in the reference
        return stop - start - int(np.count_nonzero((index >= start) & (index < stop)))

    to_place = sum(new_rows(c * chunk_rows, min((c + 1) * chunk_rows, n)) for c in todo)
    bar = tqdm(total=to_place, desc="t-SNE placement", unit="points", unit_scale=True,
               disable=not progress or not to_place, smoothing=0.1)
    with numba_threads(threads):
        for chunk, start, stop, Y in place_chunks(lambda a, b: means(slice(a, b)), n, index,
                                                  X_ref, Y_ref, chunk_rows, todo, method):
            group["tsne"][start:stop] = Y.astype(np.float32)
            placed[chunk] = 1
            bar.update(new_rows(start, stop))
    bar.close()
    t2 = time.perf_counter()
    if n > tsne_max:
        stats["reference"] = tsne_max
    stats |= {"fit_s": t1 - t0, "place_s": t2 - t1, "placed_rows": to_place,
              "points_per_s": to_place / (t2 - t1) if to_place and t2 > t1 else None}
    return stats | {"seconds": time.perf_counter() - t0}

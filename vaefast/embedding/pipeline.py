"""Batch-embed a dataset through an exported encoder into a zarr store: streaming,
bounded memory, resumable after any kill, optionally distributed on Dask.

The store's format lives in ``vaefast.embedding.store``. Each row chunk is one task that writes
only its own zarr chunks and then its marker, so a killed run resumes from the finished
chunks and ends identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vaefast.runtime import manifest
from vaefast import runtime
from vaefast.embedding import store
from vaefast.runtime.memory import trim
from vaefast.data import Source, absolute_spec, preprocess_for, reopen
from vaefast.runtime.engines import DEFAULT_PROVIDERS
from vaefast.errors import BadFile, BadRows, VaefastError, first_line
from vaefast.extras import require
from vaefast.layout import chunk_bounds
from vaefast.runtime.variants import REFERENCE, VARIANTS

CHUNK_BYTES = 1 << 28  # default rows per chunk: at most this many bytes of float32 input
BATCH_BYTES = 1 << 25  # default rows per ONNX Runtime call: this many bytes of input
CONNECT_TIMEOUT = "10s"  # a tcp:// scheduler that does not answer within this is an error
# ``--scheduler local``: a cluster on the cores its tasks use. Each worker's statistical
# profiler (a stack sample every 10 ms) and every server's 20 ms event-loop tick took
# ~11 % of a core between them with no task running (client 4 %, each worker 3.5 %;
# measured on two idle workers): 5 % with these
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
}

_SESSIONS: dict[tuple, runtime.ExportedVAE] = {}  # one ONNX Runtime session per process
_SOURCES: dict[tuple, Source] = {}  # and one opened input (built-in specs load once)


def _model(
    model_dir: str,
    threads: int | None,
    variant: str = "fp32",
    providers: str = DEFAULT_PROVIDERS,
    precision: str | None = None,
) -> runtime.ExportedVAE:
    key = (str(model_dir), threads, variant, providers, precision)
    if key not in _SESSIONS:
        _SESSIONS[key] = runtime.load(
            model_dir,
            providers=providers,
            threads=threads,
            precision=precision,
            variant=variant,
            spin=False,
        )
    return _SESSIONS[key]


def _source(reading: dict, decode_workers: int | None = None) -> Source:
    """The input opened as ``reading`` says (``vaefast.data.reopen``), kept for the next
    chunk."""
    key = (json.dumps(reading, sort_keys=True), decode_workers)
    if key not in _SOURCES:
        for old in _SOURCES.values():
            old.close()
        _SOURCES.clear()  # keep at most one input in memory
        _SOURCES[key] = reopen(reading, decode_workers)
    return _SOURCES[key]


def default_rows(sample_values: int, budget: int, cap: int) -> int:
    """A power of two of rows whose float32 inputs fit ``budget`` bytes, at most ``cap``
    (so 28x28 digits keep 65,536-row chunks and 256x256 colour images get 256)."""
    rows = max(1, budget // (4 * max(sample_values, 1)))
    return min(cap, 1 << (rows.bit_length() - 1))


def _encode_rows(
    vae: runtime.ExportedVAE, rows: np.ndarray, start: int, spec: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Encode rows read from ``start``; a bad value is named by its row in the input."""
    try:
        return vae.encode(rows, batch_size=batch_size)
    except BadRows as e:
        raise e.shifted(start, spec) from None


@dataclass(frozen=True)
class Job:
    """What every encode task needs, as plain values (Dask ships it to its workers): the
    model and how it runs, the input as ``vaefast.data.reopen`` takes it, the store."""

    model_dir: str
    reading: dict
    out: str
    chunk_rows: int
    batch_size: int
    threads: int | None = None
    variant: str = REFERENCE
    providers: str = DEFAULT_PROVIDERS
    precision: str | None = None
    skip_bad: bool = False

    def model(self, threads: int | None = None) -> runtime.ExportedVAE:
        """This process's session of the job's model (``threads`` overrides the job's)."""
        return _model(
            self.model_dir, threads or self.threads, self.variant, self.providers, self.precision
        )

    def read(self, source: Source, chunk: int):
        """(rows, bad) of chunk ``chunk``: ``bad`` maps undecodable rows to their reason
        when ``skip_bad`` (else None: the first one stops the run)."""
        bad: dict[int, str] | None = {} if self.skip_bad else None
        return source.rows(*chunk_bounds(chunk, self.chunk_rows, source.n), bad), bad

    def encode(self, vae: runtime.ExportedVAE, source: Source, chunk: int, rows=None):
        """(start, mu, logvar, bad) of one chunk: rows read (or given, already read),
        encoded; rows whose file could not be decoded are NaN."""
        start, _ = chunk_bounds(chunk, self.chunk_rows, source.n)
        X, bad = rows if rows is not None else self.read(source, chunk)
        mu, logvar = _encode_rows(vae, X, start, source.spec, self.batch_size)
        if bad:
            mu[[r - start for r in bad]] = np.nan
            logvar[[r - start for r in bad]] = np.nan
        return start, mu, logvar, bad


def _worker_threads() -> int | None:
    """The thread count of the Dask worker running this task (None outside a worker).
    A worker has imported distributed; a local run is not made to (``embed --tsne``:
    ~0.4 s of CPU and ~19 MB of peak RSS, measured side by side)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", worker)
    return int(getattr(state, "nthreads", 0)) or None


def encode_chunk(job: Job, chunk: int) -> int:
    """Encode rows of chunk ``chunk`` and write them and their marker; return the row count.

    A plain function of plain values, so Dask can run it on any worker: the ONNX Runtime
    session and the input are opened there (sessions cannot be pickled), with the job's
    threads, by default the worker's own thread count. Encoded images are decoded by the
    task itself (the workers are the parallelism).
    """
    vae = job.model(job.threads or _worker_threads())
    return store.write_chunk(job.out, chunk, *job.encode(vae, _source(job.reading, 1), chunk))


def _encode_pipelined(vae: runtime.ExportedVAE, source: Source, job: Job, todo: list[int], bar):
    """The single-process path: while ONNX Runtime encodes chunk k (it releases the GIL),
    one thread reads chunk k+1 (encoded images: decoded by the source's worker
    processes) and another writes chunk k-1."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        pending_read = reader.submit(job.read, source, todo[0]) if todo else None
        pending_write = None
        for k, chunk in enumerate(todo):
            rows = pending_read.result()
            if k + 1 < len(todo):
                pending_read = reader.submit(job.read, source, todo[k + 1])
            encoded = job.encode(vae, source, chunk, rows)
            del rows
            if pending_write is not None:
                bar.update(pending_write.result())
            pending_write = writer.submit(store.write_chunk, job.out, chunk, *encoded)
        if pending_write is not None:
            bar.update(pending_write.result())


def embed(
    model_dir: str | os.PathLike,
    input: str,
    out: str | os.PathLike,
    *,
    batch_size: int | None = None,
    chunk_rows: int | None = None,
    dtype: str = "float32",
    tsne: bool = False,
    tsne_max: int = 10_000,
    tsne_transform: str = "exact",
    seed: int = 0,
    scheduler: str | None = None,
    workers: int = 2,
    threads: int | None = None,
    variant: str = "fp32",
    providers: str = DEFAULT_PROVIDERS,
    precision: str | None = None,
    resize: str = "crop",
    exif: str = "transpose",
    allow_empty_classes: bool = False,
    decode_workers: int | None = None,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed every row of ``input`` through the exported encoder into the zarr store ``out``.

    Runs again after an interruption continue from the finished chunks and give the
    same result as an uninterrupted run. ``scheduler``: None (this process), ``"local"``
    (a dask.distributed LocalCluster of ``workers`` one-thread processes) or a ``tcp://``
    address (each task uses its worker's thread count). ``threads``: ONNX Runtime and
    t-SNE threads (default: all cores). ``variant`` (a name in
    ``vaefast.runtime.variants.VARIANTS``), ``providers`` (an ONNX Runtime choice or
    ``openvino``) and ``precision`` (OpenVINO's bf16 or f32) pick the exported model run;
    they are recorded in the store. With ``tsne``, an exact
    t-SNE map of ``mu`` is added (above ``tsne_max`` rows: of a seeded sample, the rest
    placed by transform, ``tsne_transform`` naming how: "exact" or the opt-in
    "interpolated"). ``mu`` and ``logvar`` are stored [N, *latent_shape] as
    ``dtype`` (float32, or float16 at half the size: latents cached for diffusion
    training). ``batch_size`` and ``chunk_rows`` default to powers of two sized to the
    input (8,192 and 65,536 for 28x28 digits; fewer for large images). A NaN, inf or
    out-of-range input value stops the run with one line naming its row and removes the
    store, which could never finish.

    Encoded images (``images:``, ``parquet:``, ``wds:`` inputs) are decoded by
    ``decode_workers`` processes (default: the cores available) while the model encodes,
    turned by their EXIF orientation (``exif``: transpose) or not (ignore), converted to
    the model's channels and resized by ``resize`` (crop, squash, pad); the store keeps
    each row's id. An image folder's empty class folder is refused unless
    ``allow_empty_classes``; hidden files and folders are skipped and counted. A file
    that cannot be decoded stops the run with one line naming it, the finished chunks
    kept (fix it and run again to resume); with ``skip_bad`` its row is NaN and its id
    and reason are recorded (``skipped``).
    Returns figures of the run (rows, seconds, rows/s, chunks resumed, skipped files).
    """
    if dtype not in store.DTYPES:
        raise VaefastError(f"unknown dtype {dtype!r}; use {' or '.join(store.DTYPES)}")
    if scheduler is not None:
        require("dask", "--scheduler")
    out = Path(out)
    input = absolute_spec(input)  # the store finds its input again from any folder
    prep = preprocess_for(
        input, manifest.image_display_shape(manifest.read_model_json(model_dir)), resize, exif
    )
    reading = {"spec": input, "preprocess": None if prep is None else prep.to_dict()} | (
        {"allow_empty_classes": True} if allow_empty_classes else {}
    )
    for key in [k for k in _SOURCES if k[0] == input]:  # the input may have changed
        _SOURCES.pop(key).close()
    source = _source(reading, decode_workers)
    if scheduler is None:  # image decoders fork now, before ONNX Runtime starts its threads
        source.start()
    job = Job(str(model_dir), reading, str(out), 1, 1, threads, variant, providers, precision)
    vae = job.model()
    if not source.n:
        raise VaefastError(f"{input}: no rows to embed")
    sample = vae.check_inputs(source.rows(0, 1, {})).shape[1:]  # a layout mismatch: now
    values = int(np.prod(sample))
    batch_size = default_rows(values, BATCH_BYTES, 8192) if batch_size is None else batch_size
    if chunk_rows is None:  # encoded images: smaller chunks, so decode and encode overlap
        chunk_rows = default_rows(values, CHUNK_BYTES, 65536 if prep is None else 1024)
    for name, value in (
        ("batch size", batch_size),
        ("chunk rows", chunk_rows),
        ("tsne_max", tsne_max),
    ):
        if value < 1:
            raise VaefastError(f"{name} must be >= 1, got {value}")
    job = replace(job, chunk_rows=chunk_rows, batch_size=batch_size, skip_bad=skip_bad)
    if tsne:  # too few rows: refused before encoding (t-SNE imports only when asked for)
        from vaefast.tsne.mapping import reference_rows
        from vaefast.tsne.transform import placement

        reference_rows(source.n, tsne_max, seed)
        placement(tsne_transform)
    params = {"tsne": tsne, "tsne_max": tsne_max, "seed": seed, "dtype": dtype} | (
        {"tsne_transform": tsne_transform} if tsne else {}
    )
    with _client(scheduler, workers) as client:  # an unreachable one: nothing written
        group = _open_store(job, vae, source, vae.latent_shape_for(sample), params, force)
        if store.info(group).get("complete"):
            return {"rows": source.n, "seconds": 0.0, "rows_per_s": None, "already_complete": True}
        stats = _encode_all(job, vae, source, group, client, progress)
        if tsne:  # the map needs no model: its session and buffers go first (peak memory)
            del vae
            _SESSIONS.clear()
            skipped = sorted(store.skipped_rows(group))
            stats["tsne"] = _map(
                group, job, tsne_max, seed, progress, tsne_transform, skipped, client
            )
    store.mark_complete(group)
    return stats


def _open_store(job: Job, vae, source: Source, latent_shape, params: dict, force: bool):
    """The store at ``job.out``, created or reopened: its identity is the model, the input
    as read, the parameters, the engine and precision (a resume with any other is refused
    in one line by ``store.open_or_create``)."""
    attrs = {
        "model": str(vae.folder),
        "model_sha256": vae.meta["weights_sha256"],
        "input": source.fingerprint(),
        "params": {"chunk_rows": job.chunk_rows}
        | params
        | {"variant": job.variant, "engine": vae.engine, "precision": vae.precision},
        "latent_shape": list(latent_shape),
        "providers": vae.providers,
        "label_names": source.label_names,
        # False where the variant's rows depend on their batch (``Variant.batch_independent``)
        "batch_independent": VARIANTS[job.variant].batch_independent,
    }
    return store.open_or_create(
        Path(job.out),
        attrs,
        force,
        n=source.n,
        latent_shape=latent_shape,
        chunk_rows=job.chunk_rows,
        labels=source.labels,
        tsne=params["tsne"],
        dtype=params["dtype"],
        ids=source.ids,
        columns=source.columns,
    )


def _encode_all(job: Job, vae, source: Source, group, client, progress: bool) -> dict:
    """Encode the store's pending chunks (here, or as tasks of the Dask ``client``); a bad
    value removes the store (it could never finish), a bad file keeps the finished
    chunks. Returns the run's figures."""
    from tqdm.auto import tqdm

    todo = store.pending(group, "encoded")
    n = source.n
    n_chunks = -(-n // job.chunk_rows)
    done_rows = n - sum(np.diff(chunk_bounds(c, job.chunk_rows, n))[0] for c in todo)
    bar = tqdm(
        total=n,
        initial=done_rows,
        unit="rows",
        unit_scale=True,
        desc="embed",
        disable=not progress,
        smoothing=0.1,
    )
    upscaled = getattr(source, "upscaled", 0)  # images counted from here (not the probe)
    t0 = time.perf_counter()
    try:
        if client is None:
            _encode_pipelined(vae, source, job, todo, bar)
        else:
            _run_tasks(client, encode_chunk, job, todo, bar)
    except BadRows as e:
        store.remove(job.out)
        raise VaefastError(
            f"{e}; clean the input first ({job.out} was removed: it could never finish)"
        ) from None
    except BadFile as e:
        done = n_chunks - len(store.pending(group, "encoded"))
        raise VaefastError(
            f"{e}; replace the file and run the same command to resume ({job.out} keeps its "
            f"{done} finished chunk(s)), or add --skip-bad to skip files that cannot be decoded"
        ) from None
    finally:
        bar.close()
        source.close()  # the decode processes, if any
    seconds = time.perf_counter() - t0
    return {
        "rows": n,
        "rows_encoded": n - done_rows,
        "seconds": seconds,
        "rows_per_s": (n - done_rows) / seconds if seconds > 0 else None,
        "chunks_resumed": n_chunks - len(todo),
        "variant": job.variant,
        "providers": vae.providers,
        "skipped": len(store.skipped_rows(group)),
        "upscaled": getattr(source, "upscaled", 0) - upscaled,
        "hidden": getattr(source, "hidden", 0),
    }


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int):
    """A Dask client for the run (None without ``scheduler``): a LocalCluster of
    ``workers`` one-thread processes ("local") or the cluster at a ``tcp://`` address;
    closed, with its cluster, however the run ends."""
    if scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        import logging

        # silence_logs: what the workers log when an interrupt cancels their tasks and
        # closes the scheduler under them (warnings, and an ERROR with a traceback when a
        # heartbeat finds the scheduler gone) is not the user's business: the CLI says
        # what happened in one line, and a task's own error reaches the client. No dashboard;
        # the scheduler's HTTP server (health, metrics) takes a free loopback port, not
        # 8787, which a second run (or a user's own cluster) holds: distributed warns then.
        # LOCAL_CLUSTER_CONFIG: the cluster shares the machine's cores with its tasks
        import dask

        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.CRITICAL,
            )
            client = Client(cluster)
    elif scheduler.startswith("tcp://"):
        try:
            cluster, client = None, Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as e:  # refused, or no answer within the timeout
            raise VaefastError(
                f"cannot reach the Dask scheduler at {scheduler}: {first_line(e, 160)}"
            ) from None
    else:
        raise VaefastError(f"unknown scheduler {scheduler!r}; use local or tcp://HOST:PORT")
    try:
        _check_workers(client)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _check_workers(client) -> None:
    """Every worker can import vaefast: a task whose function a worker cannot unpickle
    never finishes (Dask retries it), so a worker without the package is named in one
    line before any task is sent."""
    import importlib

    try:
        client.run(importlib.import_module, __name__)
    except ModuleNotFoundError as e:
        raise VaefastError(
            f"a Dask worker cannot import {e.name}: install vaefast (and its extras) on "
            "every worker"
        ) from None


def _run_tasks(client, task, job: Job, chunks: list[int], bar, *args) -> None:
    """``task(job, *args, chunk)`` for each chunk on the cluster, ``bar`` advanced by each
    result as it comes."""
    from distributed import as_completed

    name = task.__name__.replace("_", "-")
    futures = [
        client.submit(task, job, *args, c, key=f"vaefast-{name}-{c}-{job.out}", pure=False)
        for c in chunks
    ]
    for future in as_completed(futures):
        bar.update(future.result())


def place_chunk(job: Job, reference: tuple, method: str, chunk: int) -> int:
    """Place the rows of chunk ``chunk`` against the reference map (index, rows,
    positions and its prepared placement, ``vaefast.tsne.transform.prepare``) and write
    their positions, then the chunk's marker; return how many rows were placed. A plain
    function of plain values, as ``encode_chunk``: each point is placed alone against the
    fixed reference, so the positions do not depend on which worker places which chunk."""
    import zarr

    from vaefast.tsne.mapping import place_chunks
    from vaefast.tsne.threads import numba_threads

    group = zarr.open_group(job.out, mode="r+")
    index, X_ref, Y_ref, prepared = reference
    placed = 0
    with numba_threads(job.threads or _worker_threads()):
        for _, start, stop, Y in place_chunks(
            lambda a, b: store.read_mu(group, slice(a, b)),
            store.n_rows(group),
            index,
            X_ref,
            Y_ref,
            job.chunk_rows,
            [chunk],
            method,
            prepared,
        ):
            store.write_positions(group, chunk, start, Y)
            fresh = ~np.isin(np.arange(start, stop), index) & np.isfinite(Y).all(axis=1)
            placed += int(np.count_nonzero(fresh))
    return placed


def valid_rows(ranks: np.ndarray, skipped: np.ndarray) -> np.ndarray:
    """The rows of the ``ranks``-th rows that were not skipped (``skipped``: sorted rows),
    without listing the valid rows: the k-th valid row is k plus the skipped rows at or
    before it, and ``skipped[i] - i`` counts them by searchsorted."""
    ranks = np.asarray(ranks, np.int64)
    return ranks + np.searchsorted(skipped - np.arange(len(skipped)), ranks, side="right")


def _count_in(rows: np.ndarray, start: int, stop: int) -> int:
    """How many of the sorted ``rows`` are in [start, stop)."""
    return int(np.searchsorted(rows, stop) - np.searchsorted(rows, start))


def _map(
    group,
    job: Job,
    tsne_max: int,
    seed: int,
    progress: bool,
    method: str = "exact",
    skipped: list[int] = (),
    client=None,
) -> dict[str, Any]:
    """The t-SNE map of ``mu`` by ``vaefast.tsne.mapping``'s rule, stored resumably: the
    reference map first (its index written last), then placed rows chunk by chunk —
    here, or as tasks of the Dask ``client`` (the reference and its prepared placement
    scattered to the workers once). Skipped rows (no μ) get no position (NaN) and are
    never in the reference."""
    from tqdm.auto import tqdm

    from vaefast.tsne.mapping import fit_reference, reference_rows
    from vaefast.tsne.transform import prepare

    n, chunk_rows = store.n_rows(group), job.chunk_rows
    gaps = np.sort(np.asarray(list(skipped), np.int64))  # skipped rows: O(skipped), not O(N)
    n_valid = n - len(gaps)
    t0 = time.perf_counter()
    stats: dict[str, Any] = {
        "method": "exact" if n_valid <= tsne_max else "reference+transform",
        "n": n_valid,
    }
    found = store.reference(group)
    if found is None:
        index = valid_rows(reference_rows(n_valid, tsne_max, seed), gaps)
        X_ref = store.read_mu(group, index)
        trim(collect=True)  # ~60 MB free in malloc's arenas at 1M rows; P is next
        reference = fit_reference(X_ref, seed, job.threads, progress)
        store.save_reference(group, index, reference.embedding)
        stats |= {
            "kl": reference.kl,
            "iterations": reference.n_iter + 1,
            "pairs_per_s": reference.timings["pairs_per_s"],
            "reference_rows": len(index),
        }
        found = index, reference.embedding
    else:
        X_ref = store.read_mu(group, found[0])
    t1 = time.perf_counter()
    index, Y_ref = found
    todo = store.pending(group, "placed")

    def new_rows(start: int, stop: int) -> int:  # rows of [start, stop) to place
        return stop - start - _count_in(gaps, start, stop) - _count_in(index, start, stop)

    to_place = sum(new_rows(*chunk_bounds(c, chunk_rows, n)) for c in todo)
    bar = tqdm(
        total=to_place,
        desc="t-SNE placement",
        unit="points",
        unit_scale=True,
        disable=not progress or not to_place,
        smoothing=0.1,
    )
    shared = (index, X_ref, Y_ref, prepare(Y_ref, method) if to_place else None)
    if client is None:
        for chunk in todo:
            bar.update(place_chunk(job, shared, method, chunk))
    elif todo:
        [scattered] = client.scatter([shared], broadcast=True)
        _run_tasks(client, place_chunk, job, todo, bar, scattered, method)
    bar.close()
    t2 = time.perf_counter()
    if n_valid > tsne_max:
        stats["reference"] = tsne_max
    stats |= {
        "fit_s": t1 - t0,
        "place_s": t2 - t1,
        "placed_rows": to_place,
        "points_per_s": to_place / (t2 - t1) if to_place and t2 > t1 else None,
    }
    return stats | {"seconds": time.perf_counter() - t0}

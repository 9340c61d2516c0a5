"""Batch-embed: streaming into zarr, resume after SIGKILL, Dask equals serial, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import EXPORTED, ROOT, embed_killed_midway, run_cli, write_idx
from vaefast.runtime import manifest
from vaefast import runtime
from vaefast.embedding.pipeline import embed
from vaefast.errors import VaefastError
from vaefast.embedding.store import open_embeddings

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

MODEL = EXPORTED / "mnist5k-z20"


@pytest.fixture(scope="module")
def big_npy(tmp_path_factory):
    """200,000 generated uint8 images (157 MB): mnist5k digits with noise and shifts."""
    from vaefast import data

    base = data.read("mnist5k").X
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("big") / "images.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(200_000, 784))
    for start in range(0, len(X), 10_000):
        pick = base[rng.integers(0, len(base), 10_000)].astype(np.int16)
        noise = rng.integers(-20, 21, size=pick.shape, dtype=np.int16)
        X[start : start + 10_000] = np.clip(pick + noise, 0, 255).astype(np.uint8)
    X.flush()
    del X
    return path


@pytest.fixture(scope="module")
def reference_mu(big_npy):
    return runtime.load(MODEL, providers="cpu").encode(np.load(big_npy, mmap_mode="r"))[0]


def test_embed_streams_a_large_npy_into_zarr(big_npy, reference_mu, tmp_path):
    stats = embed(MODEL, str(big_npy), tmp_path / "e.zarr", chunk_rows=50_000, progress=False)
    group = open_embeddings(tmp_path / "e.zarr")
    np.testing.assert_array_equal(group["mu"][:], reference_mu)
    assert group["logvar"].shape == (200_000, 20) and group["mu"].chunks == (50_000, 20)
    attrs = dict(group.attrs)["vaefast"]
    meta = manifest.read_model_json(MODEL)
    assert attrs["complete"] and attrs["model_sha256"] == meta["weights_sha256"]
    assert attrs["input"]["rows"] == 200_000 and attrs["params"]["chunk_rows"] == 50_000
    assert stats["rows"] == 200_000 and stats["rows_per_s"] > 0
    assert attrs["batch_independent"] is True  # fp32: each row's latent is its own


def test_a_store_records_that_dynamic_int8_rows_depend_on_their_batch(tmp_path):
    embed(MODEL, "mnist5k", tmp_path / "e.zarr", variant="int8", progress=False)
    attrs = dict(open_embeddings(tmp_path / "e.zarr").attrs)["vaefast"]
    assert attrs["params"]["variant"] == "int8" and attrs["batch_independent"] is False


def test_resume_after_sigkill_gives_identical_store(big_npy, reference_mu, tmp_path):
    out = tmp_path / "k.zarr"
    args = [
        str(MODEL),
        str(big_npy),
        "--out",
        str(out),
        "--chunk-rows",
        "10000",
        "--batch-size",
        "2048",
        "--quiet",
    ]
    embed_killed_midway(args, out)
    with pytest.raises(VaefastError, match="incomplete"):
        open_embeddings(out)
    result = run_cli("embed", *args)
    assert result.returncode == 0, result.stderr
    assert "chunks resumed" in result.stdout and "(0 chunks resumed)" not in result.stdout
    np.testing.assert_array_equal(open_embeddings(out)["mu"][:], reference_mu)


@pytest.mark.parametrize("transform", ["exact", "interpolated"])
def test_dask_local_cluster_equals_serial(tmp_path, transform):
    """Encoding and the t-SNE placement as Dask tasks (the reference fitted once, scattered
    to the workers): the store equals a single process's, positions included."""
    pytest.importorskip("distributed")
    from vaefast import data

    np.save(tmp_path / "x.npy", data.read("mnist5k").X[:3000])
    common = dict(chunk_rows=500, tsne=True, tsne_max=400, tsne_transform=transform)
    embed(MODEL, str(tmp_path / "x.npy"), tmp_path / "serial.zarr", progress=False, **common)
    stats = embed(
        MODEL,
        str(tmp_path / "x.npy"),
        tmp_path / "dask.zarr",
        scheduler="local",
        workers=2,
        progress=False,
        **common,
    )
    assert stats["tsne"]["placed_rows"] == 2600
    a, b = open_embeddings(tmp_path / "serial.zarr"), open_embeddings(tmp_path / "dask.zarr")
    for name in ("mu", "logvar", "tsne"):
        np.testing.assert_array_equal(a[name][:], b[name][:])
    assert np.isfinite(b["tsne"][:]).all()


def test_the_local_cluster_listens_on_loopback_only():
    """`--scheduler local` listens on loopback only (the scheduler, its HTTP server, the
    nannies and workers), on free ports: not on distributed's default 8787, which two
    runs at once (or a user's own cluster) would contend for."""
    pytest.importorskip("distributed")
    import psutil

    from vaefast.embedding.pipeline import _client

    with _client("local", 1) as client:
        pids = [os.getpid(), *client.run(os.getpid).values()]
        listening = [
            c.laddr
            for pid in pids
            for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
    assert len(listening) >= 3  # the scheduler, its HTTP server, the worker
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening
    assert 8787 not in {addr.port for addr in listening}


def _dask_setting(key: str):
    import dask

    return dask.config.get(key)


def test_the_local_cluster_runs_without_its_idle_overhead():
    """`--scheduler local`'s workers sample no profile and tick once a second (they
    share the cores with their tasks); the settings do not leak into the caller's
    configuration."""
    pytest.importorskip("distributed")
    import dask

    from vaefast.embedding.pipeline import LOCAL_CLUSTER_CONFIG, _client

    before = {key: dask.config.get(key) for key in LOCAL_CLUSTER_CONFIG}
    with _client("local", 1) as client:
        for key, value in LOCAL_CLUSTER_CONFIG.items():
            assert set(client.run(_dask_setting, key).values()) == {value}, key
    assert {key: dask.config.get(key) for key in LOCAL_CLUSTER_CONFIG} == before


def test_peak_memory_does_not_hold_the_input(big_npy, tmp_path):
    # VmHWM, not ru_maxrss: the latter carries the forking parent's peak across exec
    code = (
        "from vaefast.embedding.pipeline import embed;"
        f"embed({str(MODEL)!r}, {str(big_npy)!r}, {str(tmp_path / 'm.zarr')!r}, "
        "chunk_rows=20000, progress=False);"
        "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    peak_mb = int(out.stdout.strip())
    assert peak_mb < 300, f"peak RSS {peak_mb} MB for a 157 MB input"


def test_tsne_exact_and_reference_plus_transform(tmp_path):
    from vaefast import data

    raw = data.read("mnist5k")
    np.savez(tmp_path / "x.npz", X=raw.X[:1500], y=raw.y[:1500])
    stats = embed(
        MODEL,
        str(tmp_path / "x.npz"),
        tmp_path / "t.zarr",
        chunk_rows=500,
        tsne=True,
        tsne_max=600,
        progress=False,
    )
    group = open_embeddings(tmp_path / "t.zarr")
    assert stats["tsne"]["method"] == "reference+transform"
    Y = group["tsne"][:]
    assert Y.shape == (1500, 2) and np.isfinite(Y).all() and (Y != 0).all(axis=1).all()
    np.testing.assert_array_equal(group["labels"][:], raw.y[:1500])
    ref = group["tsne_reference_index"][:]
    np.testing.assert_array_equal(Y[ref], group["tsne_reference"][:].astype(np.float32))
    from sklearn.neighbors import KNeighborsClassifier

    others = np.setdiff1d(np.arange(1500), ref)
    knn = KNeighborsClassifier(10).fit(Y[ref], raw.y[:1500][ref])
    assert knn.score(Y[others], raw.y[:1500][others]) > 0.7


def test_zarr_and_idx_inputs(tmp_path):
    import zarr

    from vaefast import data

    X = data.read("mnist5k").X[:300]
    zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=X.shape, chunks=(100, 784), dtype="uint8"
    )[:] = X
    write_idx(tmp_path / "t10k-images-idx3-ubyte", X.reshape(300, 28, 28))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(300) % 10)
    mu = runtime.load(MODEL, providers="cpu").encode(X)[0]
    for name, spec in (
        ("z", str(tmp_path / "in.zarr")),
        ("i", str(tmp_path / "t10k-images-idx3-ubyte")),
    ):
        embed(MODEL, spec, tmp_path / f"{name}.zarr", chunk_rows=128, progress=False)
        np.testing.assert_array_equal(open_embeddings(tmp_path / f"{name}.zarr")["mu"][:], mu)
    assert (open_embeddings(tmp_path / "i.zarr")["labels"][:] == np.arange(300) % 10).all()


def test_wrong_feature_count_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 100), np.uint8))
    with pytest.raises(
        VaefastError, match=r"inputs have shape \[N, 100\]; this model expects \[N, 784\]"
    ):
        embed(MODEL, str(tmp_path / "x.npy"), tmp_path / "o.zarr", progress=False)
    assert not (tmp_path / "o.zarr").exists()


def test_truncated_input_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100, 784), np.uint8))
    data_bytes = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data_bytes[:-5000])
    with pytest.raises(VaefastError, match="truncated"):
        embed(MODEL, str(tmp_path / "x.npy"), tmp_path / "o.zarr", progress=False)


def test_output_holding_something_else_is_untouched(tmp_path):
    (tmp_path / "o.zarr").mkdir()
    (tmp_path / "o.zarr" / "precious.txt").write_text("keep")
    result = run_cli("embed", str(MODEL), "mnist5k", "--out", str(tmp_path / "o.zarr"))
    assert result.returncode == 2 and "not a vaefast embedding store" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "o.zarr" / "precious.txt").read_text() == "keep"


def test_resuming_with_another_model_is_refused(tmp_path):
    embed(MODEL, "mnist5k", tmp_path / "o.zarr", progress=False)
    with pytest.raises(VaefastError, match="another model_sha256"):
        embed(EXPORTED / "mnist5k-z2", "mnist5k", tmp_path / "o.zarr", progress=False)
    assert open_embeddings(tmp_path / "o.zarr")["mu"].shape == (5000, 20)


def test_python_api_is_vaefast_embed(tmp_path):
    import vaefast

    assert vaefast.embed is embed


def test_embed_tsne_summary_gives_encode_fit_and_placement_apart(tmp_path):
    from vaefast import data

    np.save(tmp_path / "x.npy", data.read("mnist5k").X[:1500])
    result = run_cli(
        "embed",
        str(MODEL),
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "e.zarr"),
        "--tsne",
        "--tsne-max",
        "500",
        "--chunk-rows",
        "400",
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert "; encode " in line and "t-SNE reference fit" in line and "(500 rows)" in line
    assert "placement " in line and "(1000 rows, " in line and "points/s" in line
    assert "t-SNE placement" in result.stderr  # the progress bar
    store = open_embeddings(tmp_path / "e.zarr")
    assert np.isfinite(store["tsne"][:]).all()


@pytest.fixture
def tcp_cluster():
    """A real `dask scheduler` and two one-thread `dask worker`s on loopback, as a user
    starts them; their address. Stopped (and waited for) after the test."""
    distributed = pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    common = dict(cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [
        subprocess.Popen(
            [*dask, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            **common,
        )
    ]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address]
    procs += [
        subprocess.Popen([*worker, "--nthreads", "1", "--no-dashboard"], **common) for _ in range(2)
    ]
    try:
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        _stop(procs)


def test_an_external_tcp_cluster_equals_serial(tmp_path, tcp_cluster):
    from vaefast import data

    np.save(tmp_path / "x.npy", data.read("mnist5k").X[:2000])
    common = dict(chunk_rows=500, tsne=True, tsne_max=300, progress=False)
    embed(MODEL, str(tmp_path / "x.npy"), tmp_path / "serial.zarr", **common)
    embed(MODEL, str(tmp_path / "x.npy"), tmp_path / "tcp.zarr", scheduler=tcp_cluster, **common)
    a, b = open_embeddings(tmp_path / "serial.zarr"), open_embeddings(tmp_path / "tcp.zarr")
    for name in ("mu", "logvar", "tsne"):
        np.testing.assert_array_equal(a[name][:], b[name][:])


def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from vaefast.embedding import pipeline as embedding

    monkeypatch.setattr(embedding, "CONNECT_TIMEOUT", "2s")
    port = _free_port()  # a port nothing listens on
    np.save(tmp_path / "x.npy", np.zeros((10, 784), np.float32))
    with pytest.raises(
        VaefastError, match=rf"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    ):
        embed(
            MODEL, str(tmp_path / "x.npy"), tmp_path / "e.zarr", scheduler=f"tcp://127.0.0.1:{port}"
        )
    assert not (tmp_path / "e.zarr").exists()


def test_a_run_killed_while_dask_places_resumes_identically(tmp_path):
    """SIGKILL of the client while the workers place the map's rows: the same command
    finishes the placement from its markers, and the store equals an uninterrupted one."""
    pytest.importorskip("distributed")
    from vaefast import data

    np.save(tmp_path / "x.npy", data.read("mnist5k").X)
    args = ["--tsne", "--tsne-max", "300", "--chunk-rows", "250", "--quiet"]
    out = tmp_path / "killed.zarr"
    dask = ["--scheduler", "local", "--workers", "2"]
    embed_killed_midway(
        [str(MODEL), str(tmp_path / "x.npy"), "--out", str(out), *args, *dask], out, stage="placed"
    )
    placed = open_embeddings_progress(out, "placed")
    assert 0 < placed.sum() < len(placed)
    result = run_cli("embed", str(MODEL), str(tmp_path / "x.npy"), "--out", str(out), *args, *dask)
    assert result.returncode == 0, result.stderr
    embed(
        MODEL,
        str(tmp_path / "x.npy"),
        tmp_path / "whole.zarr",
        chunk_rows=250,
        tsne=True,
        tsne_max=300,
        progress=False,
    )
    a, b = open_embeddings(tmp_path / "whole.zarr"), open_embeddings(out)
    for name in ("mu", "tsne"):
        np.testing.assert_array_equal(a[name][:], b[name][:])


def test_a_worker_killed_mid_placement_is_retried_and_the_store_is_identical(tmp_path, tcp_cluster):
    """SIGKILL of one `dask worker` while the map's rows are being placed: its tasks run
    again (on the other worker, or on the one its nanny restarts), the command ends
    normally, and the store equals a single process's."""
    import os
    import signal
    import time

    import distributed

    from vaefast import data

    np.save(tmp_path / "x.npy", data.read("mnist5k").X)
    args = ["--tsne", "--tsne-max", "300", "--chunk-rows", "250", "--quiet"]
    out = tmp_path / "dask.zarr"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vaefast.cli",
            "embed",
            str(MODEL),
            str(tmp_path / "x.npy"),
            "--out",
            str(out),
            "--scheduler",
            tcp_cluster,
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                placed = open_embeddings_progress(out, "placed")
                if 1 <= placed.sum() < len(placed) - 4:
                    break
            except Exception:  # not written yet
                pass
            time.sleep(0.01)
        else:
            pytest.fail("the placement was never seen in progress")
        with distributed.Client(tcp_cluster, timeout="30s") as client:
            pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        assert open_embeddings_progress(out, "placed").sum() < len(placed)  # killed mid-way
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    embed(
        MODEL,
        str(tmp_path / "x.npy"),
        tmp_path / "whole.zarr",
        chunk_rows=250,
        tsne=True,
        tsne_max=300,
        progress=False,
    )
    a, b = open_embeddings(tmp_path / "whole.zarr"), open_embeddings(out)
    for name in ("mu", "logvar", "tsne"):
        np.testing.assert_array_equal(a[name][:], b[name][:])


def open_embeddings_progress(store, stage: str) -> np.ndarray:
    import zarr

    return zarr.open_group(str(store), mode="r")[f"_progress/{stage}"][:]


def test_a_worker_without_vaefast_is_named_in_one_line_and_nothing_is_written(tmp_path):
    """A `dask worker` whose Python cannot import vaefast (the package hidden from it):
    without the check, its tasks would be retried forever."""
    distributed = pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    hidden = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)];"
        f"sys.argv = ['dask-worker', {address!r}, '--nthreads', '1', '--no-dashboard', "
        "'--no-nanny']; from distributed.cli.dask_worker import main; main()"
    )
    procs = [
        subprocess.Popen([*scheduler, "--port", str(port), "--dashboard-address", ":0"], **quiet),
        subprocess.Popen([sys.executable, "-c", hidden], cwd=tmp_path, **quiet),
    ]
    try:
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
        np.save(tmp_path / "x.npy", np.zeros((10, 784), np.float32))
        out = tmp_path / "e.zarr"
        result = run_cli(
            "embed", str(MODEL), str(tmp_path / "x.npy"), "--out", str(out), "--scheduler", address
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            "vaefast embed: error: a Dask worker cannot import vaefast: install vaefast (and "
            "its extras) on every worker"
        ]
        assert not out.exists()
    finally:
        _stop(procs)


def _stop(procs: list) -> None:
    """Stop a scheduler and its workers as a user would: the workers first (SIGTERM; a
    worker still closing after 30 s is killed), then the scheduler."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _free_port() -> int:
    """A loopback port nothing listens on (the OS's pick)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    data_=st.data(),
)
def test_valid_rows_are_the_rows_left_when_the_skipped_are_taken_out(n, data_):
    """The reference sample's rows among rows not skipped, found without listing every
    valid row (O(skipped) memory at 10M rows)."""
    from vaefast.embedding.pipeline import valid_rows

    skipped = np.array(sorted(data_.draw(st.sets(st.integers(0, n - 1), max_size=n - 1))), np.int64)
    valid = np.setdiff1d(np.arange(n), skipped)
    ranks = np.array(sorted(data_.draw(st.sets(st.integers(0, len(valid) - 1)))), np.int64)
    np.testing.assert_array_equal(valid_rows(ranks, skipped), valid[ranks])


def test_xarray_opens_the_store_with_named_dimensions_labels_and_descriptions(tmp_path):
    from tests.helpers import xarray_dataset
    from vaefast import data

    out = tmp_path / "e.zarr"
    embed(MODEL, "mnist5k", out, tsne=True, tsne_max=300, progress=False)
    ds = xarray_dataset(out)
    assert ds.mu.dims == ds.logvar.dims == ("row", "latent")
    assert ds.tsne.dims == ("row", "axis") and ds.tsne_reference.dims == ("reference", "axis")
    assert "labels" in ds.coords and ds.labels.attrs["label_names"] == [str(d) for d in range(10)]
    np.testing.assert_array_equal(ds.labels.values, data.read("mnist5k").y)
    mu = runtime.load(MODEL, providers="cpu").encode(data.read("mnist5k").X[:50])[0]
    np.testing.assert_array_equal(ds.mu.isel(row=slice(0, 50)).values, mu)
    assert not np.isnan(ds.tsne.values).any()


def test_the_parquet_export_opens_in_duckdb_polars_pandas_and_datasets(tmp_path):
    """The export as the user's other tools read it: a row and an id on every row, label
    names in a column (DuckDB groups by them), the latents as fixed-size lists."""
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    from vaefast import data
    from vaefast.embedding.store import export

    out, table = tmp_path / "e.zarr", tmp_path / "e.parquet"
    embed(MODEL, "mnist5k", out, tsne=True, tsne_max=300, progress=False)
    columns = export(out, "parquet", table)["columns"]
    expected = ["row", "id", "label", "label_name", "mu", "logvar", "tsne_x", "tsne_y"]
    assert columns == expected
    y = data.read("mnist5k").y
    counts = duckdb.sql(
        f"SELECT label_name, count(*) AS n, min(len(mu)) AS z FROM '{table}' "
        "GROUP BY label_name ORDER BY label_name"
    ).fetchall()
    assert counts == [(str(d), int((y == d).sum()), 20) for d in range(10)]
    frame = pl.read_parquet(table)
    assert frame.columns == expected and frame["label_name"].dtype == pl.Categorical
    assert frame["id"].to_list()[:3] == ["0", "1", "2"]
    pandas = pd.read_parquet(table)
    assert pandas["label_name"].dtype == "category" and pandas["row"].is_monotonic_increasing
    hf = datasets.Dataset.from_parquet(str(table), cache_dir=str(tmp_path / "hf-cache"))
    assert hf.num_rows == len(y) and hf[7]["label_name"] == str(y[7])
    assert len(hf[7]["mu"]) == 20

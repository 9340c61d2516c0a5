"""Batch-embed throughput, fp32 and int8 side by side (rounds interleaved, each run in a
fresh process so nothing else counts), against this machine's sgemm rate measured in the
same run, and peak resident memory.

``make bench``: 1,000,000 x 784 uint8 rows (VAEFAST_BENCH_EMBED_ROWS to change it),
VAEFAST_BENCH_SLOW_ROUNDS (5) rounds; ``make test``: 50,000 rows, once, and t-SNE maps
from a 500-row reference (10,000 under ``make bench``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import (
    EXPORTED,
    ROOT,
    SLOW_ROUNDS,
    THREADS,
    ratio_spread,
    timed_rounds,
)

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

ENCODER_FLOPS_PER_ROW = 2 * (784 * 400 + 2 * 400 * 20)  # fc1, fc21, fc22 multiply-adds
# the reference t-SNE of ``embed --tsne``: the goals' size, and make test's smoke size (the
# same code path; placing 50,000 rows against 2,000 references took 24 s of CPU, 500: 8 s)
TSNE_MAX = {"bench": 10_000, "smoke": 500}


def _sgemm_gflops(n: int = 2048, repeats: int = 21) -> float:
    """Median sgemm rate at the encoder's shape class (float32, THREADS threads)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.random((n, 784), np.float32), rng.random((784, 400), np.float32)
    with threadpool_limits(THREADS):
        a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n * 784 * 400 / sorted(times)[repeats // 2] / 1e9


@pytest.fixture(scope="module")
def images(tmp_path_factory, request):
    disabled = request.config.getoption("benchmark_disable", False)
    rows = 50_000 if disabled else int(os.environ.get("VAEFAST_BENCH_EMBED_ROWS", "1000000"))
    path = tmp_path_factory.mktemp("embed") / "images.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 784))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 50_000):
        X[start : start + 50_000] = rng.integers(
            0, 256, size=(min(50_000, rows - start), 784), dtype=np.uint8
        )
    X.flush()
    del X
    return path, rows


VARIANTS = ["fp32", "int8"]


def _embed_once(path: Path, out: Path, variant: str) -> dict:
    """One `vaefast.embed` of the whole input in a fresh process: its rate and peak RSS."""
    code = (
        "import json; from vaefast.embedding.pipeline import embed;"
        f"s = embed({str(EXPORTED / 'mnist5k-z20')!r}, {str(path)!r}, {str(out)!r}, "
        f"threads={THREADS}, variant={variant!r}, progress=False);"
        "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024;"
        "print(json.dumps({'rows_per_s': s['rows_per_s'], 'seconds': s['seconds'],"
        " 'peak_rss_mb': hwm}))"
    )
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=1800
    )
    assert result.returncode == 0, result.stderr
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_embed_throughput_and_memory(benchmark, images, tmp_path_factory, variant):
    """Each variant's whole `embed` process timed by pytest-benchmark, the other variants
    run between its rounds; the rate and the speed-up over fp32 come from the embed's own
    seconds (without the interpreter's start)."""
    path, rows = images
    rounds = 1 if benchmark.disabled else SLOW_ROUNDS
    tmp = tmp_path_factory.mktemp("embed-out")
    benchmark.group = "embed"
    others = {v: functools.partial(_embed_once, path, tmp / f"{v}.zarr", v) for v in VARIANTS}
    mine, _, runs = timed_rounds(
        benchmark,
        others.pop(variant),
        rounds,
        others=others,
    )
    runs[variant] = mine
    sgemm = _sgemm_gflops()
    rate = float(np.median([r["rows_per_s"] for r in mine]))
    gflops = rate * ENCODER_FLOPS_PER_ROW / 1e9
    benchmark.extra_info.update(
        rows=rows,
        variant=variant,
        rounds=len(mine),
        rows_per_s=rate,
        peak_rss_mb=max(r["peak_rss_mb"] for r in mine),
        sgemm_gflops=sgemm,
        encoder_gflops=gflops,
        percent_of_sgemm=100 * gflops / sgemm,
    )
    if variant != "fp32":
        benchmark.extra_info["speedup_vs_fp32"] = ratio_spread(
            [r["seconds"] for r in runs["fp32"]], [r["seconds"] for r in mine]
        )
    assert all(r["rows_per_s"] > 0 for r in mine)
    if not benchmark.disabled:  # the goal, measured at full size
        assert max(r["peak_rss_mb"] for r in mine) < 600


def test_embed_with_a_tsne_map_of_every_row(benchmark, images, tmp_path_factory):
    """`embed --tsne` (int8 encoder) in a fresh process: encode, the exact reference fit of
    10,000 rows and the placement of every other row, timed apart, and the peak RSS of the
    whole command (goal: 1,000,000 rows in <= 8 min within 600 MB). One round."""
    path, rows = images
    out = tmp_path_factory.mktemp("embed-tsne") / "t.zarr"
    tsne_max = TSNE_MAX["smoke" if benchmark.disabled else "bench"]
    code = (
        "import json; from vaefast.embedding.pipeline import embed;"
        f"s = embed({str(EXPORTED / 'mnist5k-z20')!r}, {str(path)!r}, {str(out)!r}, "
        f"threads={THREADS}, variant='int8', tsne=True, tsne_max={tsne_max}, "
        "progress=False);"
        "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024;"
        "t = s['tsne']; print(json.dumps({'encode_s': s['seconds'], 'fit_s': t['fit_s'],"
        " 'place_s': t['place_s'], 'points_per_s': t['points_per_s'],"
        " 'peak_rss_mb': hwm}))"
    )
    benchmark.group = "embed --tsne"
    (result,), (wall,), _ = timed_rounds(
        benchmark,
        lambda: subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=3600
        ),
        1,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    benchmark.extra_info.update(rows=rows, tsne_max=tsne_max, wall_s=wall, **figures)
    shutil.rmtree(out, ignore_errors=True)


PLACE_ROUNDS = int(os.environ.get("VAEFAST_BENCH_PLACE_ROUNDS", "3"))


def test_placement_on_two_dask_workers_against_one_process(benchmark, images, tmp_path_factory):
    """`embed --tsne --tsne-transform interpolated` in a fresh process each round: one
    process with THREADS threads against a LocalCluster of two one-thread workers (the
    reference scattered once, a placement task per chunk); placement rates side by side,
    rounds interleaved (goal: Dask >= 0.9x the one process), and the client's peak RSS."""
    path, rows = images
    tsne_max = TSNE_MAX["smoke" if benchmark.disabled else "bench"]
    rounds = 1 if benchmark.disabled else PLACE_ROUNDS

    def run(name: str) -> dict:
        out = tmp_path_factory.mktemp("place") / "p.zarr"
        dask = ", scheduler='local', workers=2" if name == "dask-2x1" else ""
        code = (
            "import json; from vaefast.embedding.pipeline import embed;"
            f"s = embed({str(EXPORTED / 'mnist5k-z20')!r}, {str(path)!r}, {str(out)!r}, "
            f"threads={THREADS if not dask else 'None'}, variant='int8', tsne=True, "
            f"tsne_max={tsne_max}, tsne_transform='interpolated', progress=False{dask});"
            "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]);"
            "t = s['tsne']; print(json.dumps({'place_s': t['place_s'], "
            "'points_per_s': t['points_per_s'], 'client_peak_rss_mb': hwm // 1024}))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=7200
        )
        assert result.returncode == 0, result.stderr[-2000:]
        shutil.rmtree(out, ignore_errors=True)
        return json.loads(result.stdout.strip().splitlines()[-1])

    benchmark.group = "t-SNE placement on Dask"
    # timed: the Dask run's whole process; the one process runs between its rounds
    dask_runs, _, others = timed_rounds(
        benchmark,
        lambda: run("dask-2x1"),
        rounds,
        others={"one-process": lambda: run("one-process")},
    )
    runs = {"one-process": others["one-process"], "dask-2x1": dask_runs}
    rates = {k: [r["points_per_s"] for r in v] for k, v in runs.items()}
    assert all(np.isfinite(r) and r > 0 for v in rates.values() for r in v)
    benchmark.extra_info.update(
        rows=rows,
        tsne_max=tsne_max,
        points_per_s=rates,
        dask_over_one_process=ratio_spread(rates["dask-2x1"], rates["one-process"]),
        client_peak_rss_mb={k: max(r["client_peak_rss_mb"] for r in v) for k, v in runs.items()},
    )


def _peaks(pid: int, stop: threading.Event, out: dict[int, float]) -> None:
    """Peak RSS (VmHWM, MB) of process ``pid`` and every process it starts, read each
    second until ``stop`` (the last reading of a process is its peak to within a second
    of its end)."""
    import psutil

    while not stop.is_set():
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                status = open(f"/proc/{p.pid}/status").read()
                out[p.pid] = int(status.split("VmHWM:")[1].split()[0]) / 1024
            except (OSError, IndexError):
                pass
        stop.wait(1.0)


MAP_ROWS = int(os.environ.get("VAEFAST_BENCH_MAP_ROWS", "10000000"))


def test_ten_million_rows_embedded_and_mapped(benchmark, tmp_path_factory, request):
    """`embed --tsne --tsne-transform interpolated` of MAP_ROWS rows (mnist5k digits with
    noise through the shipped int8 encoder), end to end, in one process with THREADS
    threads and on a LocalCluster of two one-thread workers: per-phase times and the
    peak RSS of every process (goals: <= 15 min, <= 600 MB each)."""
    from vaefast import data

    rows = 20_000 if benchmark.disabled else MAP_ROWS
    path = tmp_path_factory.mktemp("map10m") / "images.npy"
    base = data.read("mnist5k").X
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 784))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 200_000):
        pick = base[rng.integers(0, len(base), min(200_000, rows - start))].astype(np.int16)
        X[start : start + len(pick)] = np.clip(pick + rng.integers(-20, 21, pick.shape), 0, 255)
    X.flush()
    del X

    def run(name: str) -> dict:
        out = tmp_path_factory.mktemp("map") / "m.zarr"
        dask = ", scheduler='local', workers=2" if name == "dask-2x1" else ""
        code = (
            "import json, time; from vaefast.embedding import embed; t0 = time.perf_counter();"
            f"s = embed({str(EXPORTED / 'mnist5k-z20')!r}, {str(path)!r}, {str(out)!r}, "
            f"threads={THREADS if not dask else 'None'}, variant='int8', tsne=True, "
            f"tsne_max={TSNE_MAX['smoke' if benchmark.disabled else 'bench']}, "
            f"tsne_transform='interpolated', progress=False{dask});"
            "t = s['tsne']; print(json.dumps({'wall_s': time.perf_counter() - t0, "
            "'encode_s': s['seconds'], 'fit_s': t['fit_s'], 'place_s': t['place_s'], "
            "'points_per_s': t['points_per_s']}))"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stop, peaks = threading.Event(), {}
        sampler = threading.Thread(target=_peaks, args=(proc.pid, stop, peaks))
        sampler.start()
        stdout, stderr = proc.communicate(timeout=7200)
        stop.set()
        sampler.join()
        assert proc.returncode == 0, stderr.decode()[-2000:]
        shutil.rmtree(out, ignore_errors=True)
        return json.loads(stdout.decode().strip().splitlines()[-1]) | {
            "peak_rss_mb_per_process": sorted(peaks.values(), reverse=True)
        }

    benchmark.group = "10M rows mapped"
    # timed: the one process end to end; the Dask run goes before it, untimed
    (one,), _, others = timed_rounds(
        benchmark, lambda: run("one-process"), 1, others={"dask-2x1": lambda: run("dask-2x1")}
    )
    runs = {"one-process": one, "dask-2x1": others["dask-2x1"][0]}
    path.unlink()
    benchmark.extra_info.update(rows=rows, runs=runs)
    print(json.dumps(runs, indent=1))
    assert all(r["wall_s"] > 0 and r["peak_rss_mb_per_process"] for r in runs.values())
    if not benchmark.disabled:
        assert min(r["wall_s"] for r in runs.values()) <= 15 * 60
        assert max(max(r["peak_rss_mb_per_process"]) for r in runs.values()) <= 600

"""Batch-embed throughput against this machine's sgemm rate (measured in the same run),
and peak resident memory, in a fresh process so nothing else counts.

``make bench``: 1,000,000 x 784 uint8 rows (VAEFAST_BENCH_EMBED_ROWS to change it);
``make test``: 50,000 rows, once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.conftest import EXPORTED, ROOT, THREADS

ENCODER_FLOPS_PER_ROW = 2 * (784 * 400 + 2 * 400 * 20)  # fc1, fc21, fc22 multiply-adds


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
        X[start:start + 50_000] = rng.integers(0, 256, size=(min(50_000, rows - start), 784),
                                               dtype=np.uint8)
    X.flush()
    del X
    return path, rows


def test_embed_throughput_and_memory(benchmark, images, tmp_path):
    path, rows = images
    code = ("import json, time; from vaefast.embedding import embed;"
            f"s = embed({str(EXPORTED / 'mnist5k-z20')!r}, {str(path)!r}, "
            f"{str(tmp_path / 'out.zarr')!r}, threads={THREADS}, progress=False);"
            "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024;"
            "print(json.dumps({'rows_per_s': s['rows_per_s'], 'seconds': s['seconds'],"
            " 'peak_rss_mb': hwm}))")

    def run():
        import json
        import shutil

        shutil.rmtree(tmp_path / "out.zarr", ignore_errors=True)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=ROOT, timeout=1800)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    benchmark.group = "embed"
    sgemm = _sgemm_gflops()
    result = benchmark.pedantic(run, rounds=1, iterations=1)
    gflops = result["rows_per_s"] * ENCODER_FLOPS_PER_ROW / 1e9
    benchmark.extra_info.update(rows=rows, rows_per_s=result["rows_per_s"],
                                peak_rss_mb=result["peak_rss_mb"], sgemm_gflops=sgemm,
                                encoder_gflops=gflops, percent_of_sgemm=100 * gflops / sgemm)
    assert result["peak_rss_mb"] < 600

"""The machine's ceilings, measured in the same run as everything else: sgemm GFLOP/s and a
plain exact-t-SNE pair kernel (sum of 1 / (1 + d) over all pairs, float64)."""

from __future__ import annotations

import numpy as np

from benchmarks.conftest import THREADS, timed_median


def test_sgemm(benchmark):
    from threadpoolctl import threadpool_limits

    n = 1024
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    benchmark.group = "ceiling"
    with threadpool_limits(THREADS):
        c = benchmark(np.matmul, a, b)
    median = timed_median(benchmark)
    if median:
        benchmark.extra_info["gflops"] = 2 * n**3 / median / 1e9
    np.testing.assert_allclose(c[0, :4], a[0] @ b[:, :4], rtol=1e-4)


def test_plain_pair_kernel(benchmark):
    import numba
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def pair_sum(y0, y1, out):
        n = y0.shape[0]
        for i in prange(n):
            s = 0.0
            for j in range(n):
                d0 = y0[i] - y0[j]
                d1 = y1[i] - y1[j]
                s += 1.0 / (1.0 + d0 * d0 + d1 * d1)
            out[i] = s

    n = 4000
    y = np.random.default_rng(0).normal(size=(2, n))
    out = np.empty(n)
    numba.set_num_threads(THREADS)
    pair_sum(y[0], y[1], out)
    benchmark.group = "ceiling"
    benchmark(pair_sum, y[0], y[1], out)
    median = timed_median(benchmark)
    if median:
        benchmark.extra_info["pairs_per_s"] = n * n / median
    d2 = (y[0, :5, None] - y[0]) ** 2 + (y[1, :5, None] - y[1]) ** 2
    np.testing.assert_allclose(out[:5], (1.0 / (1.0 + d2)).sum(axis=1), rtol=1e-10)

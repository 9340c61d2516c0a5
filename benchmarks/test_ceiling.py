"""The machine's ceilings, measured in the same run as everything else: sgemm GFLOP/s, a
plain exact-t-SNE pair kernel (per ordered pair: w = 1 / (1 + d^2), its square, five sums;
float64 and float32, structure of arrays, Numba) and streaming read bandwidth (what a
stored P costs per iteration once it leaves the caches)."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_plain_pair_kernel(benchmark, dtype):
    import numba
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, error_model="numpy")
    def pair_sums(y0, y1, out):
        n = y0.shape[0]
        one = y0.dtype.type(1.0)
        for i in prange(n):
            sw = a0 = a1 = r0 = r1 = y0.dtype.type(0.0)
            for j in range(np.uint64(n)):
                d0 = y0[i] - y0[j]
                d1 = y1[i] - y1[j]
                w = one / (one + d0 * d0 + d1 * d1)
                ww = w * w
                sw += w
                a0 += w * d0
                a1 += w * d1
                r0 += ww * d0
                r1 += ww * d1
            out[0, i] = sw
            out[1, i] = a0 + a1 + r0 + r1

    n = 4000
    y = np.random.default_rng(0).normal(size=(2, n)).astype(dtype)
    out = np.empty((2, n), dtype)
    numba.set_num_threads(THREADS)
    pair_sums(y[0], y[1], out)
    benchmark.group = "ceiling"
    benchmark(pair_sums, y[0], y[1], out)
    median = timed_median(benchmark)
    if median:
        benchmark.extra_info["pairs_per_s"] = n * n / median
    d2 = (y[0, :5, None] - y[0]).astype(float) ** 2 + (y[1, :5, None] - y[1]).astype(float) ** 2
    np.testing.assert_allclose(
        out[0, :5], (1.0 / (1.0 + d2)).sum(axis=1), rtol=1e-10 if dtype == "float64" else 1e-5
    )


def test_read_bandwidth(benchmark):
    """GB/s of a parallel float32 sum over 800 MB (P's size at N = 20,000)."""
    import numba
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def total(a):
        parts = 64
        out = np.zeros(parts)
        for p in prange(parts):
            s = np.float32(0.0)
            for j in range(a.shape[0] * p // parts, a.shape[0] * (p + 1) // parts):
                s += a[j]
            out[p] = s
        return out.sum()

    a = np.ones(200_000_000 if not benchmark.disabled else 1_000_000, np.float32)
    numba.set_num_threads(THREADS)
    total(a)
    benchmark.group = "ceiling"
    assert benchmark(total, a) == a.size
    median = timed_median(benchmark)
    if median:
        benchmark.extra_info["gb_per_s"] = a.nbytes / median / 1e9

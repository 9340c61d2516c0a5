"""Benchmark fixtures: fixed thread counts, shared data, warm sessions.

Under ``make test`` (``--benchmark-disable``) every benchmark runs once as a correctness
check; ``make bench`` times them for real.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "vaefast" / "shipped"
THREADS = int(os.environ.get("VAEFAST_BENCH_THREADS", "2"))
SLOW_ROUNDS = int(os.environ.get("VAEFAST_BENCH_SLOW_ROUNDS", "5"))  # t-SNE, embed


def pytest_benchmark_update_machine_info(config, machine_info):
    """Every result says what it was measured on: CPU, cores, ISA, versions, BLAS."""
    from vaefast.bench.machine import card

    machine_info["vaefast"] = card(THREADS)


def record(benchmark, samples: list[float]) -> None:
    """Record durations measured elsewhere (a worker process) as the benchmark's stats."""
    stats = benchmark._make_stats(1)
    for t in samples:
        stats.update(t)


def ratio_spread(reference: list[float], mine: list[float]) -> dict[str, float]:
    """reference / mine per round (rounds interleaved), as median, quartiles and range."""
    import numpy as np

    ratios = [r / m for r, m in zip(reference, mine)]
    q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
    return {
        "median": float(q2),
        "q1": float(q1),
        "q3": float(q3),
        "min": min(ratios),
        "max": max(ratios),
        "rounds": len(ratios),
    }


def timed_median(benchmark) -> float | None:
    """Median seconds of a finished benchmark, or None when benchmarking is disabled."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


@pytest.fixture(scope="session")
def mnist_test():
    from vaefast import data

    return data.load("mnist5k").X_test

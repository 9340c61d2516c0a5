"""Benchmark fixtures: fixed thread counts, shared data, warm sessions.

Under ``make test`` (``--benchmark-disable``) every benchmark runs once as a correctness
check; ``make bench`` times them for real.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
THREADS = int(os.environ.get("VAEFAST_BENCH_THREADS", "2"))


def timed_median(benchmark) -> float | None:
    """Median seconds of a finished benchmark, or None when benchmarking is disabled."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


@pytest.fixture(scope="session")
def mnist_test():
    from vaefast import data

    return data.load("mnist5k").X_test

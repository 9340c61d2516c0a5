"""Benchmark fixtures: fixed thread counts, shared data, warm sessions.

Under ``make test`` (``--benchmark-disable``) every benchmark runs once as a correctness
check; ``make bench`` times them for real.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from vaefast.bench.contention import watch

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "vaefast" / "shipped"
THREADS = int(os.environ.get("VAEFAST_BENCH_THREADS", "2"))
SLOW_ROUNDS = int(os.environ.get("VAEFAST_BENCH_SLOW_ROUNDS", "5"))  # t-SNE, embed


def pytest_benchmark_update_machine_info(config, machine_info):
    """Every result says what it was measured on: CPU, cores, ISA, versions, BLAS."""
    from vaefast.bench.machine import card

    machine_info["vaefast"] = card(THREADS)


def timed_rounds(
    benchmark,
    mine: Callable[[], Any],
    rounds: int,
    others: dict[str, Callable[[], Any]] | None = None,
    pids: list[int] | None = None,
) -> tuple[list[Any], list[float], dict[str, list[Any]]]:
    """Time ``mine()`` for ``rounds`` rounds with pytest-benchmark's own clock (its public
    ``pedantic``). Before each round, untimed, each of ``others`` runs once, so the tools
    compared alternate round by round and a drift of this shared machine hits all alike.
    Records the contention over all rounds in ``extra_info`` (``pids``: live processes of
    ours). Returns mine's results and seconds per round, and the others' results per name.
    Under ``--benchmark-disable``: one round of each, untimed."""
    results: list[Any] = []
    seconds: list[float] = []
    theirs: dict[str, list[Any]] = {name: [] for name in others or {}}

    def setup():
        for name, run in (others or {}).items():
            theirs[name].append(run())

    def target():
        t0 = time.perf_counter()
        results.append(mine())
        seconds.append(time.perf_counter() - t0)

    with watch(pids) as contention:
        benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
    benchmark.extra_info["contention"] = contention
    return results, seconds, theirs


def worker_rounds(benchmark, worker, calls: int, rounds: int) -> list[list[float]]:
    """``rounds`` rounds of ``calls`` calls in a benchmark worker (``benchmarks/worker.py``),
    each round timed by pytest-benchmark (``timed_rounds``); returns each round's per-call
    seconds by the worker's clock, each read untimed before the next round starts."""
    _, _, kept = timed_rounds(
        benchmark,
        lambda: worker.round(calls),
        rounds,
        others={"times": worker.last_times},  # the previous round's
        pids=[worker.proc.pid],
    )
    return [*kept["times"][1:], worker.last_times()]


def record(benchmark, samples: list[float]) -> None:
    """Durations the explorer's page measured by its own clock (a hover to its tooltip, a
    first frame) as the benchmark's stats: pytest-benchmark has no public way to take
    durations measured elsewhere, so this reaches its private ``_make_stats``. Every other
    suite times its rounds with ``timed_rounds``."""
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

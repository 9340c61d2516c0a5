"""Thread counts for the Numba kernels: set for a block and restored, and chosen by
measured time while a run goes on.

Numba's OpenMP pool busy-waits at every barrier. Beside another process that keeps the
cores busy (ONNX Runtime's spinning threads, a Dask worker), a parallel region waits for
a descheduled thread and an iteration can take tens of times longer than on one thread.
``ThreadPolicy`` times the iterations, probes the other choice now and then (backing off
while it loses) and keeps the faster one. Every kernel gives bit-identical results for
any thread count, so switching never changes the embedding.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, TypeVar

from vaefast.errors import VaefastError

T = TypeVar("T")


@contextlib.contextmanager
def numba_threads(n_jobs: int | None) -> Iterator[int]:
    """Set Numba's thread count for a block (None or -1: all cores) and restore it after."""
    import numba

    before = numba.get_num_threads()
    n = numba.config.NUMBA_NUM_THREADS if n_jobs in (None, -1) else int(n_jobs)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise VaefastError(
            f"n_jobs must be between 1 and {numba.config.NUMBA_NUM_THREADS} (or -1), got {n_jobs}"
        )
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before)


def blas_threads(n_jobs: int | None) -> int | None:
    """BLAS threads for the distance GEMMs: ``n_jobs``, or numpy's default (None, -1)."""
    return None if n_jobs in (None, -1) else int(n_jobs)


class ThreadPolicy:
    """Per call, run on ``threads`` or on one thread, whichever is measured faster.

    Keeps a moving average of seconds per call for the choice in use; every
    ``probe_every`` calls (doubling, up to ``max_every``, each time the probe loses) the
    other choice is re-measured over ``PROBE_CALLS`` calls, of which only the last counts
    and replaces that choice's (stale) figure. The first call of a run and of a probe
    pays for waking the thread pool; averaging it in made short iterations (digits: ~1 ms
    each) settle on one thread on an idle machine, 1.4x slower than two. A call slower
    than twice the average counts as twice the average, so a single hiccup does not
    flip the choice, while a lasting slowdown (a busy neighbour) still shows within a few
    calls.
    ``history`` counts the calls run on each choice. ``clock`` gives seconds (a test
    passes its own, so the policy's decisions are checked without timing noise).
    """

    PROBE_CALLS = 2

    def __init__(
        self,
        threads: int,
        probe_every: int = 16,
        max_every: int = 512,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.clock = clock
        self.choices = (threads, 1) if threads > 1 else (1,)
        self.seconds: dict[int, float | None] = {c: None for c in self.choices}
        self.current = threads
        self.base, self.max_every = probe_every, max_every
        self.every = self.countdown = probe_every
        self.history = {c: 0 for c in self.choices}
        self._probe_left = 0  # calls still to run on the choice being probed

    def call(self, fn: Callable[[], T], measure: bool = True) -> T:
        """``fn()`` with Numba set to the thread count this policy picks now.
        ``measure=False``: a call of other work (an iteration that also computes the KL,
        ~3x longer), run on the thread count in use and left out of the figures."""
        if len(self.choices) == 1:
            self.history[1] += 1
            return fn()
        import numba

        if not measure:
            self.history[numba.get_num_threads()] += 1
            return fn()

        other = self.choices[1] if self.current == self.choices[0] else self.choices[0]
        if self.seconds[self.current] is None:  # measure the asked-for count first
            probing = False
        elif self._probe_left == 0:
            probing = self.seconds[other] is None or self.countdown <= 0
            if probing:
                self._probe_left = self.PROBE_CALLS
        else:
            probing = True
        threads = other if probing else self.current
        numba.set_num_threads(threads)
        t0 = self.clock()
        out = fn()
        elapsed = self.clock() - t0
        self.history[threads] += 1
        if probing:
            self._probe_left -= 1
            if self._probe_left:  # the warm-up call of a probe: not counted
                return out
            self.seconds[threads] = elapsed  # a fresh figure replaces a stale one
        elif self.history[threads] == 1:
            return out  # the run's first call, a warm-up: not counted
        else:  # one hiccup (a preempted core) moves the average by at most 30 %
            last = self.seconds[threads]
            self.seconds[threads] = (
                elapsed if last is None else 0.7 * last + 0.3 * min(elapsed, 2.0 * last)
            )
        if probing:
            if self.seconds[other] < self.seconds[self.current]:
                self.current, self.every = other, self.base
            else:
                self.every = min(2 * self.every, self.max_every)
            self.countdown = self.every
        else:
            self.countdown -= 1
        return out

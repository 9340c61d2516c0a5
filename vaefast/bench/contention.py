"""How much of the machine other work took while a benchmark ran.

A figure taken while something else used the cores is not a figure of this code. Every
benchmark group and every ``bench recommend`` timing records, from the kernel's own counters
(Linux ``/proc``): the load average before and after, the share of the cores' capacity that
processes other than ours kept busy (all CPUs' busy time minus the time of this process, its
reaped children and the live processes named), and the share the hypervisor stole.
"""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from typing import Any, Iterator

# A result is taken under load when others kept more than this share of the cores busy, or
# the hypervisor stole more than STEAL_LIMIT of them
OTHERS_LIMIT = 0.10
STEAL_LIMIT = 0.05
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy, stolen) seconds of all CPUs since boot, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def _our_seconds(pids: list[int]) -> float:
    """CPU seconds of this process, its reaped children and the live processes ``pids``."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


@contextmanager
def watch(pids: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Measure contention while the block runs; the dict it yields is filled on exit:
    ``load_before``, ``load_after``, ``others_share``, ``steal_share`` (of the cores'
    capacity over the block's wall time) and ``under_load``. ``pids``: live processes of
    ours (workers) whose CPU time is not others'."""
    pids = list(pids or [])
    found: dict[str, Any] = {"load_before": round(os.getloadavg()[0], 2)}
    cpus, ours, t0 = _cpu_seconds(), _our_seconds(pids), time.perf_counter()
    try:
        yield found
    finally:
        wall = (time.perf_counter() - t0) * (os.cpu_count() or 1)
        after = _cpu_seconds()
        found["load_after"] = round(os.getloadavg()[0], 2)
        if cpus is not None and after is not None and wall > 0:
            others = after[0] - cpus[0] - (_our_seconds(pids) - ours)
            found["others_share"] = round(max(0.0, others) / wall, 3)
            found["steal_share"] = round((after[1] - cpus[1]) / wall, 3)
        found["under_load"] = bool(
            found.get("others_share", 0.0) > OTHERS_LIMIT
            or found.get("steal_share", 0.0) > STEAL_LIMIT
        )


def under_load(extra_info: dict[str, Any]) -> bool:
    """Whether a benchmark's ``extra_info`` says it was taken under load."""
    return bool((extra_info.get("contention") or {}).get("under_load"))

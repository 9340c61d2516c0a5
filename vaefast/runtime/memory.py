"""Memory as a budget: peak RSS measured per step, batch sizes fitted to what a step
needs per row.

A step's need is measured, not guessed from input sizes: the process's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs``) is read around one call at batch 1
and one at batch 2; the difference is the memory one more row costs, the rest is fixed.
The batch then fitted is the largest that keeps ``budget - RSS now`` free, stepped down
and measured again if the call at that batch still goes over. Where the peak cannot be
reset (not Linux), a step's RSS growth stands in for it.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Any, Callable, Iterator

from vaefast.errors import VaefastError

HEADROOM = 0.5  # the share of the budget a fitted batch is planned to use: verification
# does the same work in smaller slices, so memory is saved at almost no cost in time
DEFAULT_BUDGET = 4 << 30  # leaves room on a 16 GB laptop; --memory-budget changes it
MB = 1 << 20
_UNITS = {"": MB, "k": 1 << 10, "m": MB, "g": 1 << 30, "t": 1 << 40}


def parse_budget(text: str | int | float | None) -> int:
    """``"4G"``, ``"4096M"``, ``"4GB"``, ``"2.5g"`` or a number of MB -> bytes."""
    if text is None:
        return DEFAULT_BUDGET
    if isinstance(text, (int, float)):
        return int(text * MB)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise VaefastError(f"memory budget {text!r}: write it as 4G, 4096M or 2.5GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _status(key: str) -> int:
    """A VmXXX line of /proc/self/status in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss() -> int:
    """Resident memory now, in bytes."""
    now = _status("VmRSS")
    if now:
        return now
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the best we have
    return peak * (1 if sys.platform == "darwin" else 1024)


_before_resets = 0  # the highest peak of the windows closed so far


def reset_peak() -> bool:
    """Start a new peak-RSS window (Linux: ``echo 5 > /proc/self/clear_refs``). The
    kernel's own figure (``getrusage``'s ``ru_maxrss``, what ``/usr/bin/time`` reports)
    then covers the last window only; ``process_peak`` keeps the whole run's."""
    global _before_resets
    _before_resets = max(_before_resets, peak())
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak() -> int:
    """Peak RSS since the last ``reset_peak`` (or the process's start), in bytes."""
    return _status("VmHWM") or rss()


def process_peak() -> int:
    """Peak RSS of the whole process so far, resets or not, in bytes."""
    return max(_before_resets, peak())


class Steps:
    """Peak RSS of named steps, for a report: ``with steps("eager verify", batch=b):``."""

    def __init__(self, budget: int):
        self.budget = budget
        self.figures: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def measure(self, name: str, **facts) -> Iterator[None]:
        """Record the block's peak RSS under ``name``, beside ``facts`` (its batch)."""
        reset_peak()
        yield
        self.figures[name] = facts | {"peak_rss_mb": round(peak() / MB, 1)}

    def report(self) -> dict[str, Any]:
        return {
            "budget_mb": round(self.budget / MB),
            "steps": self.figures,
            "process_peak_rss_mb": round(process_peak() / MB, 1),
        }


def _need(call: Callable[[int], Any], batch: int) -> int:
    """The process's peak RSS while ``call(batch)`` runs, in bytes."""
    reset_peak()
    before = rss()
    call(batch)
    return max(peak(), before)


def _within(need: int, budget: int, step: str) -> int:
    """``need``, or one line naming the step, its need and the budget if it is over."""
    if need > budget:
        raise VaefastError(
            f"{step} needs {need / MB:,.0f} MB at batch 1, over the memory "
            f"budget of {budget / MB:,.0f} MB; raise it with --memory-budget"
        )
    return need


def row_cost(call: Callable[[int], Any], budget: int, step: str) -> tuple[int, int]:
    """(bytes the process needs while ``call(1)`` runs, bytes one more row costs),
    measured at 1 and 2 rows; refused in one line if even one row is over ``budget``."""
    need1 = _within(_need(call, 1), budget, step)
    return need1, max(_need(call, 2) - need1, 1 << 16)


def fit_batch(
    call: Callable[[int], Any],
    most: int,
    budget: int,
    step: str,
    cost: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The largest batch <= ``most`` that ``call(batch)`` runs in while the process stays
    within ``budget`` bytes — extrapolated from ``row_cost`` (``cost``, where already
    measured), and checked (halved while over) unless the extrapolation is under half the
    budget — and the bytes one more row costs (at ``most == 1``: what batch 1 needs).
    ``call`` should hold no memory between calls (ONNX Runtime: no arena)."""
    if most == 1 and cost is None:
        return 1, _within(_need(call, 1), budget, step)
    need1, per_row = cost or row_cost(call, budget, step)
    need2 = need1 + per_row
    room = int(HEADROOM * budget) - need2  # allocators grow in steps: keep some back
    batch = int(min(most, 2 + room // per_row)) if room > 0 else 1
    if need2 + (batch - 2) * per_row <= budget // 2:
        return batch, per_row  # far inside the budget: not worth a run to check
    while batch > 2:
        reset_peak()
        call(batch)
        if peak() <= budget:
            break
        batch //= 2
    return max(1, batch), per_row


def trim(collect: bool = False) -> None:
    """Hand the free pages of the C heap back to the system (glibc's ``malloc_trim``;
    elsewhere nothing), so one step's garbage does not count against the next;
    ``collect``: garbage in reference cycles first (a full ``gc.collect``, ~0.1-0.3 s in a
    process holding torch)."""
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass

"""The benchmarks' load check: other processes' CPU time is counted, ours is not."""

from __future__ import annotations

import subprocess
import sys
import time

from vaefast.bench.contention import watch


def _spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _windows(busy) -> tuple[dict, dict]:
    """One second counting the spinner as another's, then one counting it as ours. The
    suite's other workers and everything they started (siblings under pytest-xdist and
    their CLI runs, browsers, servers) count as ours in both windows, so that the spinner
    is the only difference between them."""
    import psutil

    me = psutil.Process()
    suite = [p.pid for p in me.parent().children(recursive=True) if p.pid not in (me.pid, busy.pid)]
    with watch(suite) as theirs:
        time.sleep(1.0)
    with watch([busy.pid, *suite]) as ours:
        time.sleep(1.0)
    return theirs, ours


def test_a_busy_process_beside_is_load_and_our_own_is_not():
    busy = _spinner()
    try:
        time.sleep(0.2)
        for _ in range(3):  # a sibling's process started mid-window counts as another's
            theirs, ours = _windows(busy)
            if ours["others_share"] < theirs["others_share"] - 0.3:
                break
    finally:
        busy.kill()
        busy.wait()
    assert theirs["under_load"] and theirs["others_share"] > 0.3
    assert ours["others_share"] < theirs["others_share"] - 0.3
    assert {"load_before", "load_after", "steal_share"} <= set(theirs)

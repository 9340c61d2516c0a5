"""The benchmarks' load check: other processes' CPU time is counted, ours is not."""

from __future__ import annotations

import subprocess
import sys
import time

from vaefast.bench.contention import watch


def _spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def test_a_busy_process_beside_is_load_and_our_own_is_not():
    import psutil

    # the suite's other workers (siblings under pytest-xdist) count as ours in both windows,
    # so that the spinner is the only difference between them
    me = psutil.Process()
    suite = [p.pid for p in me.parent().children() if p.pid != me.pid]
    busy = _spinner()
    try:
        time.sleep(0.2)
        with watch(suite) as theirs:
            time.sleep(1.0)
        with watch([busy.pid, *suite]) as ours:
            time.sleep(1.0)
    finally:
        busy.kill()
        busy.wait()
    assert theirs["under_load"] and theirs["others_share"] > 0.3
    assert ours["others_share"] < theirs["others_share"] - 0.3
    assert {"load_before", "load_after", "steal_share"} <= set(theirs)

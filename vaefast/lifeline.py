"""Processes vaefast starts end with the process that started them, however it ends.

An image decoder worker calls ``die_with_parent`` first thing (a LocalCluster's Dask
workers end through distributed's own machinery; the lifeline tests stop a run of each
kind and look for leftovers). On Linux it asks the kernel for SIGKILL when its parent
ends (``PR_SET_PDEATHSIG``: immediate, even when the parent was SIGKILLed); everywhere, a
daemon thread watches the parent's pid and exits the worker within ``POLL_S`` once it is
gone (the kernel's signal follows the parent *thread* that forked, so the watcher is
what covers a worker forked from a thread that has ended since).

``terminate_as_interrupt`` makes SIGTERM (``timeout``, SLURM's ``scancel``, Kubernetes,
systemd) act as Ctrl-C in the main process: the same cleanup runs and the finished
work is kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

POLL_S = 0.2  # how often a worker checks that its parent still lives
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, pdeathsig: bool = True) -> None:
    """End this process when process ``parent`` ends. ``pdeathsig``: also ask the kernel
    (Linux), right for a worker forked from its parent's long-lived thread."""
    if pdeathsig and sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watcher alone
            pass
    if os.getppid() != parent:  # the parent died before we could ask
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="vaefast-lifeline", daemon=True).start()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be (exit status 143)."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main
    thread (where it is installed at all: signal handlers belong to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Terminated

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)

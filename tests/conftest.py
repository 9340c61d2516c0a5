"""Shared fixtures: one short real training run and its export per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # ``make test`` runs one xdist worker per core: torch's and OpenBLAS's OpenMP pools
    # then take one thread each, as their docs advise under a process-parallel runner
    # (two pools of two threads on two cores spent ~16 % more CPU, measured). Set before
    # any test imports torch; child processes inherit it. Numba keeps its own count.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> Path:
    """A real 2-epoch training run on 1,000 mnist5k rows (Z=20)."""
    from vaefast.models.train import train

    out = tmp_path_factory.mktemp("runs") / "short"
    train("mnist5k", out, epochs=2, max_train=1000, progress=False)
    return out


@pytest.fixture(scope="session")
def short_export(short_run, tmp_path_factory) -> Path:
    """The short run exported with int8 and fp16 variants."""
    from vaefast.export import export

    out = tmp_path_factory.mktemp("exported") / "short"
    export(short_run, out, variants=("int8", "fp16"))
    return out


# the slowest modules (torch: training, export), which the workers start on
START_WITH = ("benchmarks/test_sd_vae.py", "tests/test_latent_diffusion.py")


def pytest_collection_modifyitems(config, items):
    """scikit-learn's own t-SNE tests marked where they do not apply; and the modules
    marked ``slow`` run first (``START_WITH`` before the others; stable order otherwise),
    so that ``make test``'s workers, which take whole files in collection order, do not
    end on one long file."""
    from tests import test_sklearn_tsne

    test_sklearn_tsne.pytest_collection_modifyitems_for(items)
    items.sort(
        key=lambda item: (
            item.nodeid.split("::")[0] not in START_WITH,
            item.get_closest_marker("slow") is None,
        )
    )


MARK = "VAEFAST_TEST_PROCESS"  # set while a test runs; every process it starts inherits it


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(request):
    """Every process a test starts (CLI runs, decode workers, Dask workers, browsers),
    and every process those start, has ended within a few seconds of the test's end —
    also those a killed run orphaned. They are told apart by a mark in the environment
    they inherit from the test, so a user's own runs beside the suite are never flagged
    or killed."""
    import time

    import psutil

    me = psutil.Process()
    mark = f"{os.getpid()}:{request.node.nodeid}"
    before = {p.pid for p in psutil.process_iter()}
    saved = os.environ.get(MARK)
    os.environ[MARK] = mark
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = saved
    deadline = time.time() + 10
    while True:
        left = [p for p in started_by(mark, me, before) if _alive(p)]
        if not left or time.time() > deadline:
            break
        time.sleep(0.1)
    left = [p for p in left if _alive(p)]
    for p in left:
        p.kill()
    assert not left, f"processes outlived the test: {[_describe(p) for p in left]}"


def started_by(mark: str, me, before: set[int]) -> list:
    """The processes not in ``before`` that carry ``mark`` (our descendants, and orphans
    of ours that were reparented away) or descend from us; never another process,
    whatever its name."""
    import psutil

    ours = {p.pid for p in me.children(recursive=True)}
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid in before or p.pid == me.pid:
            continue
        if "multiprocessing.resource_tracker" in " ".join(p.info["cmdline"] or []):
            continue  # multiprocessing's one per process; it ends with its parent
        try:
            marked = p.environ().get(MARK) == mark
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            marked = False
        if marked or (p.pid in ours and _alive(p)):
            found.append(p)
    return found


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except Exception:
        return str(p.pid)

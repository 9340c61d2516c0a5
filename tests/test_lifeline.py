"""Processes vaefast starts end with it, however it ends: SIGTERM (timeout, scancel,
Kubernetes), SIGKILL (the OOM killer), Ctrl-C — and the same command then resumes to the
store an uninterrupted run writes."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import zarr

from tests.helpers import (
    EXPORTED,
    embed_killed_midway,
    photo_crops,
    run_cli,
    write_image_folder,
    write_image_parquet,
    write_shards,
)
from vaefast.embedding.pipeline import embed

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

MODEL = EXPORTED / "mnist5k-conv-z16"
N = 480


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lifeline")
    photos = photo_crops(N, 64, 80, seed=5)
    labels = np.arange(N) % 3
    write_image_folder(root / "folder", photos, classes=3)
    write_image_parquet(root / "photos.parquet", photos, labels, row_group_size=32)
    (root / "shards").mkdir()
    return {
        "images": f"images:{root / 'folder'}",
        "parquet": f"parquet:{root / 'photos.parquet'}",
        "wds": f"wds:{write_shards(root / 'shards', photos, labels, per_shard=100)}",
    }


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory) -> dict[str, np.ndarray]:
    """Each input's μ from an uninterrupted run."""
    root = tmp_path_factory.mktemp("clean")
    out = {}
    for kind, spec in inputs.items():
        embed(MODEL, spec, root / f"{kind}.zarr", chunk_rows=16, progress=False)
        out[kind] = zarr.open_group(str(root / f"{kind}.zarr"), mode="r")["mu"][:]
    return out


def _left(children: list, within: float = 10.0) -> list:
    """Those of ``children`` still alive after ``within`` seconds (polled: a busy machine
    may take longer than an idle one to deliver the signal and reap them)."""
    import psutil

    def alive(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + within
    left = [p for p in children if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    for p in left:
        p.kill()
    return left


CASES = [
    ("images", signal.SIGTERM, []),
    ("images", signal.SIGKILL, []),
    ("parquet", signal.SIGTERM, []),
    ("parquet", signal.SIGKILL, []),
    ("wds", signal.SIGTERM, []),
    ("wds", signal.SIGKILL, []),
    ("images", signal.SIGKILL, ["--decode-workers", "2"]),
    ("images", signal.SIGINT, []),
    ("images", signal.SIGTERM, ["--scheduler", "local"]),
    ("images", signal.SIGKILL, ["--scheduler", "local"]),
]


@pytest.mark.parametrize(
    "kind, sig, extra",
    CASES,
    ids=[f"{k}-{s.name}{'-' + '-'.join(e) if e else ''}" for k, s, e in CASES],
)
def test_no_process_of_a_stopped_run_is_left_and_it_resumes(
    inputs, clean, tmp_path, kind, sig, extra
):
    out = tmp_path / "e.zarr"
    args = [str(MODEL), inputs[kind], "--out", str(out), "--chunk-rows", "16", "--quiet", *extra]
    status, children = embed_killed_midway(args, out, sig=sig)
    assert children, "the run had started no process to check"
    assert not _left(children), "processes outlived the run"
    if sig != signal.SIGKILL:  # handled: one line saying how to resume, 128 + signal
        assert status == 128 + sig, embed_killed_midway.stderr
        lines = embed_killed_midway.stderr.strip().splitlines()
        assert len(lines) == 1 and "run the same command again to resume" in lines[0]
    done = zarr.open_group(str(out), mode="r")["_progress/encoded"][:]
    assert 0 < done.sum() < len(done)  # stopped midway, finished chunks kept
    result = run_cli("embed", *args)
    assert result.returncode == 0, result.stderr
    assert "chunks resumed" in result.stdout
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["mu"][:], clean[kind])


def test_a_decode_worker_ends_within_a_second_of_its_parent(tmp_path):
    """The lifeline itself, on a worker forked from a thread that ended since (where the
    kernel's parent-death signal would not fire): the watcher ends it."""
    import subprocess
    import sys

    import psutil

    code = """
import os, sys, threading, time
from vaefast.lifeline import die_with_parent
parent = os.getpid()
def fork():
    if os.fork() == 0:
        die_with_parent(parent, pdeathsig=False)
        time.sleep(60)
        os._exit(0)
t = threading.Thread(target=fork); t.start(); t.join()
print("forked", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "forked"
    children = psutil.Process(proc.pid).children()
    assert len(children) == 1
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert not _left(children)

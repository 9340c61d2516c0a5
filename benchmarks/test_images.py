"""Embedding folders of real-photo JPEGs (and the same images as parquet and WebDataset
shards) through the shipped conv model, against a plain single-process loop and against
this machine's bound, each run in its own process, rounds interleaved.

The bound, measured in the same run: N x (decode seconds per image / cores + encode
seconds per image) — the decode parallelised perfectly over the cores, the encode not
overlapped at all. The command's start-up (the same command on 10 of the images, in the
same format: importing pyarrow is parquet's start-up, not its rate) is subtracted from its
wall time.

``make bench``: 6,000 crops of 200x160 (VAEFAST_BENCH_PHOTOS), SLOW_ROUNDS rounds, and a
100,000-file folder for peak memory; ``make test``: 300 crops, once, and 2,000 files.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import (
    EXPORTED,
    ROOT,
    SLOW_ROUNDS,
    THREADS,
    ratio_spread,
    timed_rounds,
)
from tests.helpers import (
    encoded,
    photo_crops,
    write_image_folder,
    write_image_parquet,
    write_shards,
)

MODEL = EXPORTED / "mnist5k-conv-z16"

PLAIN_LOOP = """
import sys, time, numpy as np
from pathlib import Path
from PIL import Image
from vaefast import runtime
vae = runtime.load(sys.argv[1], threads={threads})
files = sorted(Path(sys.argv[2]).rglob('*.jpg'))
t0 = time.perf_counter()
batch = []
for f in files:  # what one writes first: open, convert, resize + center-crop, batch
    im = Image.open(f).convert('L')
    s = 28 / min(im.size)
    im = im.resize((max(28, round(im.width * s)), max(28, round(im.height * s))),
                   Image.Resampling.BILINEAR)
    left, top = (im.width - 28) // 2, (im.height - 28) // 2
    batch.append(np.asarray(im.crop((left, top, left + 28, top + 28))))
    if len(batch) == 256:
        vae.encode(np.stack(batch))
        batch = []
if batch:
    vae.encode(np.stack(batch))
print(time.perf_counter() - t0)
"""

BOUND = """
import json, os, sys, time, numpy as np
from vaefast import data, runtime
from vaefast.data.decode import Preprocess, decode_many
prep = Preprocess(28, 28, 1)
source = data.open_source('images:' + sys.argv[2], prep, decode_workers=1)
t0 = time.perf_counter()
X, bad, _ = decode_many(source.collection.fetch(0, source.n), prep)  # read + decode, serial
decode_s = (time.perf_counter() - t0) / source.n
vae = runtime.load(sys.argv[1], threads={threads}, spin=False)
vae.encode(X[:256])
t0 = time.perf_counter()
vae.encode(X)
encode_s = (time.perf_counter() - t0) / source.n
print(json.dumps({{'decode_s': decode_s, 'encode_s': encode_s, 'cores': {threads}}}))
"""


def _wall(args: list[str], timeout: float = 1800) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - t0


def _command(spec: str, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    seconds = _wall(
        [
            sys.executable,
            "-m",
            "vaefast.cli",
            "embed",
            str(MODEL),
            spec,
            "--out",
            str(out),
            "--quiet",
            "--threads",
            str(THREADS),
        ]
    )
    shutil.rmtree(out, ignore_errors=True)
    return seconds


@pytest.fixture(scope="module")
def photo_sets(tmp_path_factory, request):
    """The same JPEG crops as a folder, a parquet file and tar shards; and 10 of them in
    each format (the commands' start-up)."""
    disabled = request.config.getoption("benchmark_disable", False)
    n = 300 if disabled else int(os.environ.get("VAEFAST_BENCH_PHOTOS", "6000"))
    root = tmp_path_factory.mktemp("photos")
    photos = photo_crops(n)
    labels = np.arange(n) % 3
    write_image_folder(root / "folder", photos, classes=3)
    write_image_folder(root / "ten", photos[:10], classes=3)
    write_image_parquet(root / "photos.parquet", photos, labels, row_group_size=256)
    write_image_parquet(root / "ten.parquet", photos[:10], labels[:10])
    for name in ("shards", "ten-shards"):
        (root / name).mkdir()
    pattern = write_shards(root / "shards", photos, labels, per_shard=1000)
    return {
        "n": n,
        "dir": root / "folder",
        "tmp": root,
        "folder": (f"images:{root / 'folder'}", f"images:{root / 'ten'}"),
        "parquet": (f"parquet:{root / 'photos.parquet'}", f"parquet:{root / 'ten.parquet'}"),
        "wds": (
            f"wds:{pattern}",
            f"wds:{write_shards(root / 'ten-shards', photos[:10], labels[:10])}",
        ),
    }


_BOUND: dict[str, dict] = {}


def _plain(sets: dict) -> float:
    """Seconds of the plain PIL loop over the folder, by its own clock."""
    args = [sys.executable, "-c", PLAIN_LOOP.format(threads=THREADS), str(MODEL), str(sets["dir"])]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=True)
    return float(done.stdout.split()[-1])


def _bound(sets: dict) -> dict:
    """The machine's bound, measured once: serial read + decode and encode per image."""
    if not _BOUND:
        args = [sys.executable, "-c", BOUND.format(threads=THREADS), str(MODEL), str(sets["dir"])]
        done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=True)
        _BOUND.update(json.loads(done.stdout.split("\n")[-2]))
    return _BOUND


def _net(sets: dict, kind: str) -> float:
    """A command's wall minus its start-up (the same command on 10 images)."""
    full, ten = sets[kind]
    return _command(full, sets["tmp"] / f"{kind}.zarr") - _command(ten, sets["tmp"] / "s.zarr")


@pytest.mark.parametrize("kind", ["folder", "parquet", "wds"])
def test_embed_photos_against_a_plain_loop_and_the_bound(benchmark, photo_sets, kind):
    """Each input kind's `embed` command timed whole by pytest-benchmark; between its rounds,
    untimed, the plain loop, the command's start-up (on 10 images) and, for parquet and
    WebDataset, the folder's command; rates are wall minus start-up."""
    rounds = 1 if benchmark.disabled else SLOW_ROUNDS
    n, (full, ten) = photo_sets["n"], photo_sets[kind]
    benchmark.group = "embed photos"
    others = {
        "plain": functools.partial(_plain, photo_sets),
        "startup": functools.partial(_command, ten, photo_sets["tmp"] / "s.zarr"),
    }
    if kind != "folder":
        others["folder"] = functools.partial(_net, photo_sets, "folder")
    walls, _, runs = timed_rounds(
        benchmark,
        functools.partial(_command, full, photo_sets["tmp"] / f"{kind}.zarr"),
        rounds,
        others=others,
    )
    runs[kind] = [w - s for w, s in zip(walls, runs["startup"])]
    bound = _bound(photo_sets)
    bound_s = n * (bound["decode_s"] / bound["cores"] + bound["encode_s"])
    mine = float(np.median(runs[kind]))
    benchmark.extra_info.update(
        images=n,
        kind=kind,
        rounds=len(runs[kind]),
        images_per_s=n / mine,
        startup_s=float(np.median(runs["startup"])),
        plain_loop_images_per_s=n / float(np.median(runs["plain"])),
        speedup_vs_plain_loop=ratio_spread(runs["plain"], runs[kind]),
        bound_s=bound_s,
        percent_of_bound=100 * bound_s / mine,
        decode_ms_per_image=1e3 * bound["decode_s"],
        encode_ms_per_image=1e3 * bound["encode_s"],
    )
    if kind != "folder":
        benchmark.extra_info["rate_vs_folder"] = ratio_spread(runs["folder"], runs[kind])
    assert all(np.isfinite(runs[kind])) and np.isfinite(bound_s)
    if not benchmark.disabled:  # once, on a small set, wall minus start-up may be <= 0
        assert mine > 0


def test_peak_memory_of_a_large_folder(benchmark, tmp_path_factory, request):
    """Peak RSS of `embed` over a folder of many small files (the listing, the ids, the
    decode workers): the main process's plus each decode worker's peak."""
    disabled = request.config.getoption("benchmark_disable", False)
    n = 2000 if disabled else int(os.environ.get("VAEFAST_BENCH_FILES", "100000"))
    root = tmp_path_factory.mktemp("many")
    blobs = [encoded(p) for p in photo_crops(500, 64, 64, seed=1)]
    for i in range(n):  # 1,000 files per class folder
        folder = root / f"c{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir()
        (folder / f"{i:07d}.jpg").write_bytes(blobs[i % len(blobs)])
    out = root.parent / "many.zarr"
    code = (
        "import json, resource; from vaefast.embedding.pipeline import embed;"
        f"s = embed({str(MODEL)!r}, 'images:{root}', {str(out)!r}, threads={THREADS},"
        " progress=False);"
        "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) // 1024;"
        "child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024;"
        "print(json.dumps({'seconds': s['seconds'], 'rows_per_s': s['rows_per_s'],"
        " 'main_peak_rss_mb': hwm, 'worker_peak_rss_mb': child}))"
    )
    benchmark.group = "embed photos"
    (result,), _, _ = timed_rounds(
        benchmark,
        lambda: subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=3600
        ),
        1,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    from vaefast.data.decode import default_workers

    total = figures["main_peak_rss_mb"] + default_workers() * figures["worker_peak_rss_mb"]
    benchmark.extra_info.update(files=n, total_peak_rss_mb=total, **figures)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    assert total > 0
    if not benchmark.disabled:  # the goal, measured at 100,000 files
        assert total < 600

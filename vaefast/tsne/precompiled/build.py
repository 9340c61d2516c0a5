"""`make kernels`: rebuild the precompiled t-SNE kernels (``vaefast.tsne.precompiled``) for
every level in ``LEVELS``, into the package (or the folder given).

First the public t-SNE paths run once on small data with Numba compiling for this CPU,
which records every kernel signature they reach. Then, one process per level, each
signature is compiled (not run: any x86-64 machine builds every level) with Numba's CPU
name set to the level, no host features and the level's ``TUNING``, and saved as a
Numba cache entry, with ``manifest.json`` beside the levels. Run it after editing a
kernel module: a test checks that the shipped code was built from today's sources.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from vaefast.tsne.precompiled import LEVELS, OFF, ROOT, TUNING, dispatchers, stamp


def kernel_modules() -> list:
    from vaefast.tsne._kernels import MODULES

    return MODULES


def _name(kernel) -> str:
    return f"{kernel.py_func.__module__}.{kernel.py_func.__qualname__}"


def run_paths() -> None:
    """Every public t-SNE path once, small: fits in 2-D and 3-D from few and many
    features, dense, sparse and recomputed P, precomputed distances, both placements."""
    import numpy as np

    from vaefast.tsne import TSNE, map_points
    from vaefast.tsne.affinities import GEMM_MIN_FEATURES
    from vaefast.tsne.transform import PLACEMENTS

    rng = np.random.default_rng(0)
    for features in (20, GEMM_MIN_FEATURES):
        X = rng.normal(size=(120, features)).astype(np.float32)
        for dims in (2, 3):
            for budget in (None, 0):
                TSNE(dims, perplexity=10, max_iter=260, max_dense_bytes=budget).fit(X)
        # far-apart clusters: most pairs at eps, so a sparse P fits where a dense one not
        C = (X + np.repeat(rng.normal(scale=50.0, size=(4, features)), 30, axis=0)).astype(
            np.float32
        )
        TSNE(perplexity=10, max_iter=260, max_dense_bytes=2 * 120 * 119 - 1).fit(C)
        D = ((X[:, None] - X[None]) ** 2).sum(-1)
        TSNE(perplexity=10, max_iter=260, metric="precomputed", init="random").fit(D)
        for method in PLACEMENTS:
            map_points(X, max_exact=80, method=method)


def record(out: Path) -> None:
    """Run the paths and write to ``out`` the signatures each kernel was called with from
    Python (a kernel that only other kernels call is compiled into them)."""
    from numba.core import event

    found: dict[str, list] = {}

    class FromPython(event.Listener):
        depth = 0

        def on_start(self, ev) -> None:
            if self.depth == 0:
                found.setdefault(_name(ev.data["dispatcher"]), []).append(ev.data["args"])
            self.depth += 1

        def on_end(self, ev) -> None:
            self.depth -= 1

    with event.install_listener("numba:compile", FromPython()):
        run_paths()
    out.write_bytes(pickle.dumps(found))


def compile_level(signatures: Path, out: Path) -> None:
    """Compile every recorded signature (Numba's CPU name is set by the caller) and save
    each as a cache entry in ``out``."""
    from numba.core.caching import IndexDataCacheFile

    modules = kernel_modules()
    wanted = pickle.loads(signatures.read_bytes())
    source_stamp = stamp(modules)
    for kernel in dispatchers(modules):
        for sig in wanted.get(_name(kernel), []):
            kernel.compile(sig)
    for kernel in dispatchers(modules):
        cache = kernel._cache
        entries = IndexDataCacheFile(str(out), cache._impl.filename_base, source_stamp)
        for sig in wanted.get(_name(kernel), []):
            cres = kernel.overloads[sig]
            if cache._impl.check_cachable(cres):
                entries.save(cache._index_key(sig, cres.codegen), cache._impl.reduce(cres))


def _step(args: list[str], **env: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "vaefast.tsne.precompiled.build", *args],
        check=True,
        env={**os.environ, OFF: "0", **env},
    )


def build(root: Path = ROOT) -> None:
    """Rebuild every level under ``root``, replacing older copies, and its manifest."""
    import numba

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        signatures = tmp / "signatures.pickle"
        _step(["record", str(signatures)], NUMBA_CACHE_DIR=str(tmp / "host"))
        for level in LEVELS:
            staged = tmp / level
            staged.mkdir()
            _step(
                ["compile", str(signatures), str(staged)],
                NUMBA_CACHE_DIR=str(tmp / f"cache-{level}"),
                NUMBA_CPU_NAME=level,
                NUMBA_CPU_FEATURES=TUNING[level],
            )
            shutil.rmtree(root / level, ignore_errors=True)
            shutil.move(staged, root / level)
        wanted = pickle.loads(signatures.read_bytes())
    manifest = {
        "stamp": stamp(kernel_modules()),
        "numba": numba.__version__,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "levels": list(LEVELS),
        "kernels": {name: [str(s) for s in sigs] for name, sigs in sorted(wanted.items())},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(f.stat().st_size for f in root.rglob("*.nb?"))
    print(f"{root}: {len(manifest['kernels'])} kernels, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"]:
        record(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["compile"]:
        compile_level(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

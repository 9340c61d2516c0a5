"""The precompiled t-SNE kernels: built from today's kernel sources, loaded by a fresh
process with an empty Numba cache without compiling anything, and equal to what Numba
compiles on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from vaefast.tsne import precompiled
from vaefast.tsne._kernels import MODULES

# P, KL and gradient of 300 points in a fresh process; prints the level used and the
# kernels Numba compiled
FRESH = """
import json, sys
import numpy as np
from numba.core import event

compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass

with event.install_listener("numba:compile", Count()):
    from vaefast.tsne import joint_probabilities
    from vaefast.tsne._kernels import LEVEL
    from vaefast.tsne.objective import KLObjective

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    Y = rng.normal(size=(2, 300)).astype(np.float32)
    affinities = joint_probabilities(X, 30.0)
    kl, grad = KLObjective(affinities)(Y, 12.0)
    if sys.argv[2:] == ["paths"]:  # the public paths, as users call them
        from vaefast.tsne import TSNE, map_points

        for n, dtype in ((300, np.float64), (2000, np.float32)):
            Z = rng.normal(size=(n, 20)).astype(dtype)
            TSNE(early_exaggeration=12, learning_rate=200, max_iter=250).fit(Z)
            TSNE(max_iter=250).fit(Z[:, :3])
        TSNE(3, max_iter=250, init="random", random_state=0).fit(X.astype(np.float64))
        map_points(rng.normal(size=(500, 8)), max_exact=200, method="interpolated")
        wide = rng.normal(size=(300, 100))
        TSNE(max_iter=250, max_dense_bytes=0).fit(wide[:200]).transform(wide[200:])
np.savez(sys.argv[1], P=affinities.P, kl=kl, grad=grad)
print(json.dumps({"level": LEVEL, "compiled": sorted(set(compiled))}))
"""


def _fresh(tmp_path, name: str, *args: str, **env: str) -> tuple[dict, dict]:
    out = tmp_path / f"{name}.npz"
    cache = tmp_path / f"cache-{name}"
    run = subprocess.run(
        [sys.executable, "-c", FRESH, str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"NUMBA_CACHE_DIR": str(cache), **env},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout), dict(np.load(out))


def test_the_shipped_kernels_were_built_from_these_sources():
    import numba

    manifest = json.loads((precompiled.ROOT / "manifest.json").read_text())
    assert manifest["stamp"] == precompiled.stamp(MODULES), "kernels edited: run make kernels"
    assert manifest["numba"] == numba.__version__, "numba changed: run make kernels"
    assert manifest["levels"] == list(precompiled.LEVELS)
    for level in manifest["levels"]:
        indexes = {p.name.split("-")[0] for p in (precompiled.ROOT / level).glob("*.nbi")}
        assert indexes == {k.split(".", 2)[2] for k in manifest["kernels"]}, level


@pytest.mark.skipif(precompiled.host_level() is None, reason="this CPU has no shipped level")
def test_a_fresh_process_loads_them_without_compiling_and_they_equal_numbas_own(tmp_path):
    """An empty Numba cache: with the shipped code no t-SNE kernel compiles, whatever path
    and number types the user takes; with it off
    (``VAEFAST_PRECOMPILED=0``) Numba compiles them here, to the same P, KL and gradient."""
    manifest = json.loads((precompiled.ROOT / "manifest.json").read_text())
    if manifest["python"] != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"the kernels are built for Python {manifest['python']}")
    shipped, ours = _fresh(tmp_path, "shipped", "paths")
    assert shipped == {"level": precompiled.host_level(), "compiled": []}
    local, theirs = _fresh(tmp_path, "local", **{precompiled.OFF: "0"})
    assert local["level"] is None and "gradient" in local["compiled"]
    np.testing.assert_allclose(ours["P"], theirs["P"], rtol=1e-6)
    assert float(ours["kl"]) == pytest.approx(float(theirs["kl"]), rel=1e-6)
    gap = np.linalg.norm(ours["grad"] - theirs["grad"])
    assert gap <= 1e-6 * np.linalg.norm(theirs["grad"])

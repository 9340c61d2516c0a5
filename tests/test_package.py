"""The package as users get it: the wheel built from the sdist equals the wheel built
from the checkout, it installs into a fresh venv (uv, from the local cache) and runs the
demo from an empty folder; on a base install, and with any one extra missing, every
command that needs an extra names it in one line."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT
from vaefast.tsne import precompiled

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

UV = Path(sys.executable).parent / "uv"


def _uv(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    out = subprocess.run([str(UV), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert out.returncode == 0, f"uv {' '.join(args)}\n{out.stderr[-3000:]}"
    return out.stdout


def _find_links() -> list[str]:
    """Where pip finds the local torch build (as the Makefile passes it to uv)."""
    given = os.environ.get("PIP_FIND_LINKS", "").split()
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return [a for link in sorted(set(given + config)) for a in ("--find-links", link)]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist and wheel built from the tracked files of the checkout, and the wheel
    built again from that sdist."""
    if not UV.exists() or not (ROOT / ".git").exists():
        pytest.skip("needs uv and a git checkout")
    root = tmp_path_factory.mktemp("dist")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    source = root / "source"
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    _uv("build", "-q", "--sdist", "--wheel", "-o", str(root / "checkout"), str(source))
    [sdist] = (root / "checkout").glob("*.tar.gz")
    _uv("build", "-q", "--wheel", "-o", str(root / "from-sdist"), str(sdist))
    [wheel] = (root / "checkout").glob("*.whl")
    [again] = (root / "from-sdist").glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "wheel_from_sdist": again}


def _contents(wheel: Path) -> dict[str, str]:
    """Each file of a wheel and its sha256 (its RECORD, less RECORD's own line)."""
    with zipfile.ZipFile(wheel) as z:
        [record] = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        rows = csv.reader(io.StringIO(z.read(record).decode()))
        return {name: digest for name, digest, _ in rows if name != record}


def test_the_sdist_rebuilds_the_same_wheel(dists):
    assert _contents(dists["wheel_from_sdist"]) == _contents(dists["wheel"])


def test_the_wheel_holds_the_shipped_models_kernels_page_and_licence(dists):
    from vaefast.shipped import SHIPPED

    files = _contents(dists["wheel"])
    for name in SHIPPED:
        for part in ("encoder.onnx", "decoder.onnx", "model.json", "export_report.json"):
            assert f"vaefast/shipped/{name}/{part}" in files
    assert "vaefast/explore/static/explorer.js" in files
    for level in precompiled.LEVELS:  # the precompiled t-SNE kernels, index and code
        ours = [f for f in files if f.startswith(f"vaefast/tsne/precompiled/{level}/")]
        assert {f.rsplit(".", 1)[1] for f in ours} == {"nbi", "nbc"}, level
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    assert not any(f.startswith(("tests/", "benchmarks/")) or "/web/" in f for f in files)
    with zipfile.ZipFile(dists["wheel"]) as z:
        record = _contents(dists["wheel"])["vaefast/shipped/mnist5k-z20/encoder.onnx"]
        data = z.read("vaefast/shipped/mnist5k-z20/encoder.onnx")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert record == f"sha256={digest}"
    assert data == (ROOT / "vaefast/shipped/mnist5k-z20/encoder.onnx").read_bytes()


def test_the_metadata_has_licence_classifiers_version_and_user_extras_only(dists):
    import vaefast

    with zipfile.ZipFile(dists["wheel"]) as z:
        [name] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(z.read(name).decode())
    assert meta["Version"] == vaefast.__version__
    assert meta["License-Expression"] == "BSD-3-Clause"
    classifiers = meta.get_all("Classifier")
    for topic in ("Programming Language :: Python :: 3.11", "Operating System", "Topic ::"):
        assert any(c.startswith(topic) for c in classifiers), topic
    requires = meta.get_all("Requires-Dist")
    in_all = [r for r in requires if 'extra == "all"' in r]
    assert in_all and not any(
        tool in r for r in in_all for tool in ("pytest", "playwright", "hypothesis", "ruff")
    ), in_all
    with zipfile.ZipFile(dists["wheel"]) as z:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    assert "/LICENSE" in " ".join(
        subprocess.run(
            ["tar", "tzf", str(dists["sdist"])], capture_output=True, text=True
        ).stdout.split()
    )


def _venv(root: Path, wheel: Path, extras: str = "", compile: bool = False) -> Path:
    """A fresh venv holding the wheel (with ``extras``), from uv's cache alone;
    ``compile``: byte-compiled at install, as pip installs (every later process imports
    torch from .pyc files: 2.3 s against 4.7 s here)."""
    _uv("venv", "-q", str(root), "--python", sys.executable)
    python = root / "bin" / "python"
    _uv(
        "pip",
        "install",
        "-q",
        "--offline",
        *["--compile-bytecode"] * compile,
        "--python",
        str(python),
        "-c",
        str(ROOT / "constraints.txt"),
        *_find_links(),
        f"{wheel}{extras}",
    )
    return root / "bin"


class User:
    """A user of the wheel: its venv (with ``extras``) and an empty working folder; ``run``
    calls its ``vaefast`` there, with no trace of the checkout in the environment."""

    def __init__(self, root: Path, wheel: Path, extras: str = "", compile: bool = False):
        self.bin = _venv(root / "venv", wheel, extras, compile)
        self.here = root / "empty"
        self.here.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.vaefast = [str(self.bin / "vaefast")]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.vaefast, *args],
            cwd=self.here,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def test_demo_quick_runs_from_an_empty_folder_and_the_explorer_opens_it(dists, tmp_path):
    """`pip install 'vaefast[all]'`, then `vaefast demo --quick` in an empty folder:
    everything lands under --out, and the command it prints opens the explorer."""
    import httpx

    user = User(tmp_path, dists["wheel"], "[all]", compile=True)
    here = user.here
    run = user.run("demo", "--quick", "--out", "demo", timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in here.iterdir()) == ["demo"]
    demo = here / "demo"
    assert (demo / "embeddings.zarr" / "tsne").is_dir()
    assert (demo / "plots-mlp" / "index.md").is_file() and (
        demo / "plots-z2" / "latent.png"
    ).is_file()
    [command] = [line for line in run.stdout.splitlines() if line.startswith("[explore]")]
    args = command.split(": ", 1)[1].split()
    assert args[:2] == ["vaefast", "explore"]
    server = subprocess.Popen(
        [*user.vaefast, *args[1:], "--no-browser", "--port", "0"],
        cwd=here,
        env=user.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "serving" in line, line + server.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        page = httpx.get(url, timeout=30)
        meta = httpx.get(url.rstrip("/") + "/api/meta", timeout=30)
        assert page.status_code == 200 and "explorer.js" in page.text
        assert meta.status_code == 200 and meta.json()["rows"] == 5000
    finally:
        server.terminate()
        server.wait(timeout=30)


# command line -> the extra its one-line refusal names, on a base install
NEEDS_AN_EXTRA = [
    (["train", "--out", "r"], "train"),
    (["export", "r", "--out", "x"], "train"),
    (["export", "--diffusers", "d", "--out", "x"], "diffusers"),
    (["demo", "--quick"], "train"),
    (["explore", "mnist5k-z20", "e.zarr"], "explore"),
    (["embed", "mnist5k-z20", "mnist5k", "--out", "e.zarr", "--scheduler", "local"], "dask"),
    (["embed", "mnist5k-z20", "parquet:t.parquet", "--out", "e.zarr"], "parquet"),
    (["embed", "mnist5k-z20", "hf:t", "--out", "e.zarr"], "parquet"),
    (["embeddings", "e.zarr", "--to", "parquet", "e.parquet"], "parquet"),
    (["embed", "mnist5k-z20", "mnist5k", "--out", "e.zarr", "--providers", "openvino"], "openvino"),
    (
        ["plot", "reconstructions", "mnist5k-z20", "--out", "p", "--providers", "openvino"],
        "openvino",
    ),
]


def _names_the_extra(out: subprocess.CompletedProcess, argv: list[str], extra: str) -> None:
    """One line on stderr naming ``pip install 'vaefast[EXTRA]'``, exit status 2."""
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, (argv, out.stderr[-2000:])
    assert f"pip install 'vaefast[{extra}]'" in err[0], (argv, err)


def test_a_base_install_runs_the_runtime_and_names_the_extra_of_the_rest(dists, tmp_path):
    import vaefast as package

    user = User(tmp_path, dists["wheel"])
    for argv, extra in NEEDS_AN_EXTRA:
        _names_the_extra(user.run(*argv), argv, extra)
    embed = user.run("embed", "mnist5k-z20", "mnist5k", "--out", "e.zarr", "--quiet")
    assert embed.returncode == 0, embed.stderr[-2000:]
    # the first map loads the shipped kernels: Numba compiles nothing into site-packages
    tsne = user.run("tsne", "e.zarr", "--out", "map.npy", "--max-iter", "250", "--quiet")
    assert tsne.returncode == 0, tsne.stderr[-2000:]
    assert np.load(user.here / "map.npy").shape == (5000, 2)
    compiled = [p for p in user.bin.parent.rglob("*.nbi") if "precompiled" not in p.parts]
    assert not compiled or precompiled.host_level() is None, compiled
    assert user.run("--version").stdout.strip() == f"vaefast {package.__version__}"


@pytest.mark.parametrize("extra", ["train", "diffusers", "dask", "parquet", "openvino", "explore"])
def test_each_missing_extra_is_named_by_every_command_that_needs_it(extra, tmp_path):
    """With everything else installed and only ``extra``'s packages unimportable, each
    command or option that needs it says so in one line, exit 2."""
    from vaefast.extras import EXTRAS

    blocked = EXTRAS[extra]
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None  # as if not installed\n"
        "from vaefast.cli import main\n"
        "sys.exit(main())\n"
    )
    mine = [(argv, e) for argv, e in NEEDS_AN_EXTRA if e == extra]
    assert mine
    for argv, _ in mine:
        out = subprocess.run(
            [sys.executable, "-c", code, *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        _names_the_extra(out, argv, extra)

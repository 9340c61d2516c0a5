"""Rules that hold across the package: one direction of imports, no torch on the runtime
path, one-line errors with exit code 2 from every command, outputs with the user's umask."""

from __future__ import annotations

import ast
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import EXPORTED, ROOT, run_cli

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

PACKAGE = ROOT / "vaefast"
# The stages that run on exported files, as folders (or one-module stages) of the package:
# nothing in them reaches torch or the torch side.
RUNTIME_FOLDERS = ("data", "runtime", "embedding", "tsne", "plot", "explore", "bench")
# The torch side. ``bench.timing`` also imports torch: it times the eager model beside the
# runtimes, each candidate in its own process.
TORCH_FOLDERS = ("models", "export")
EAGER_BASELINE = "vaefast.bench.timing"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(name: str) -> set[str]:
    """Every module ``name`` imports anywhere in its source (lazy imports included)."""
    path = PACKAGE.parent / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules or not m.startswith("vaefast")}


def reachable(root: str) -> set[str]:
    """vaefast modules reachable from ``root`` through any import, and the external
    top-level packages they import."""
    seen, todo, external = set(), [root], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for m in imports(name):
            if m.startswith("vaefast"):
                todo.append(m)
            else:
                external.add(m.split(".")[0])
    return seen | external


def test_tsne_imports_nothing_from_vaefast_but_errors():
    for path in (PACKAGE / "tsne").glob("*.py"):
        outside = {
            m
            for m in imports(module_name(path))
            if m.startswith("vaefast") and not m.startswith("vaefast.tsne")
        }
        assert outside <= {"vaefast.errors", "vaefast.errors.VaefastError"}, (path, outside)


def modules_in(folders: tuple[str, ...]) -> list[str]:
    """The package's modules that live in one of ``folders`` (a folder or a one-module stage)."""
    names = (module_name(p) for p in PACKAGE.rglob("*.py"))
    return sorted(m for m in names if len(m.split(".")) > 1 and m.split(".")[1] in folders)


def test_only_the_torch_folders_import_torch():
    importers = {
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(m == "torch" or m.startswith("torch.") for m in imports(module_name(p)))
    }
    assert importers, "the torch side imports torch"
    assert importers - set(modules_in(TORCH_FOLDERS)) == {EAGER_BASELINE}


@pytest.mark.parametrize("folder", RUNTIME_FOLDERS)
def test_the_runtime_folders_never_reach_torch(folder):
    torch_side = set(modules_in(TORCH_FOLDERS))
    roots = [m for m in modules_in((folder,)) if m != EAGER_BASELINE]
    assert roots
    for root in roots:
        graph = reachable(root)
        assert "torch" not in graph and not graph & torch_side, (root, graph & torch_side)


@pytest.mark.parametrize(
    "code",
    [
        "from vaefast import runtime; vae = runtime.load(Z20, variant='int8');"
        "mu, lv = vae.encode(np.zeros((5, 784), np.uint8)); vae.decode(mu); vae.sample(3)",
        "from vaefast.tsne import TSNE; "
        "TSNE(max_iter=250, perplexity=5).fit(np.random.default_rng(0).random((40, 4)))",
        "import matplotlib; matplotlib.use('Agg'); from vaefast.plot import render; "
        "render('all', Z20, OUT, max_points=200); render('samples', Z2, OUT, embed=True)",
        "from vaefast.embedding.pipeline import embed; embed(Z20, 'mnist5k', "
        "OUT + '/e.zarr', tsne=True, tsne_max=300, progress=False)",
    ],
    ids=["runtime", "tsne", "plot", "embed"],
)
def test_running_never_imports_torch(tmp_path, code):
    setup = (
        f"import sys, numpy as np; Z20 = {str(EXPORTED / 'mnist5k-z20')!r}; "
        f"Z2 = {str(EXPORTED / 'mnist5k-z2')!r}; OUT = {str(tmp_path)!r}; "
    )
    out = subprocess.run(
        [sys.executable, "-c", setup + code + "; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_train_refuses_a_name_or_data_it_cannot_take_before_torch_loads(tmp_path):
    """The architectures' table is torch-free: ``train --help`` lists it, an unknown
    ``--arch`` and images whose sides the conv VAE cannot halve twice are refused by it."""
    np.save(tmp_path / "odd.npy", np.zeros((20, 10, 10), np.uint8))
    out = str(tmp_path / "out")
    calls = [
        ["train", "--help"],
        ["train", "--arch", "resnet", "--out", out],
        ["train", "--data", str(tmp_path / "odd.npy"), "--arch", "conv", "--out", out],
    ]
    code = (
        "import contextlib, io, sys; from vaefast.cli import main\n"
        f"for argv in {calls!r}:\n"
        "    err, code = io.StringIO(), None\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            code = main(argv)\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    print(code, err.getvalue().strip().splitlines()[-1:])\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 4, out.stdout + out.stderr
    assert lines[0] == "0 []"
    assert lines[1].startswith("2 ") and "invalid choice: 'resnet'" in lines[1]
    assert lines[2].startswith("2 ") and "sides divisible by 4, got 10x10" in lines[2]
    assert lines[3] == "False"


def test_maps_never_import_scikit_learn_or_dask(tmp_path):
    """embed --tsne and map_points fit and place without scikit-learn, which would bring
    pandas and pyarrow with it (~65 MB of embed's 600 MB budget), and, run here rather
    than on a cluster, without Dask (~19 MB and ~0.4 s of CPU)."""
    code = (
        f"import sys, numpy as np; from vaefast.embedding.pipeline import embed; "
        f"from vaefast.tsne import map_points; "
        f"embed({str(EXPORTED / 'mnist5k-z20')!r}, 'mnist5k', {str(tmp_path / 'e.zarr')!r}, "
        "tsne=True, tsne_max=300, progress=False); "
        "map_points(np.random.default_rng(0).random((400, 5)), max_exact=300); "
        "print(sorted(m for m in ('sklearn', 'pandas', 'pyarrow', 'dask', 'distributed') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


Z2 = str(EXPORTED / "mnist5k-z2")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "nope", "--out", "OUT"], "unknown data spec"),
        (["train", "--latent-dim", "0", "--out", "OUT"], "latent size must be >= 1"),
        (["train", "--data", "idx:/no/where", "--out", "OUT"], "no such IDX"),
        (["train", "--data", "ODD", "--arch", "conv", "--out", "OUT"], "divisible by 4"),
        (["export", "NOWHERE", "--out", "OUT"], "not found"),
        (
            [
                "export",
                "--module",
                "tests/byo_vae.py:no_such",
                "--input-shape",
                "3,32,32",
                "--out",
                "OUT",
            ],
            "has no function",
        ),
        (
            [
                "export",
                "--module",
                "tests/byo_vae.py:build_model",
                "--input-shape",
                "3,32,32",
                "--weights",
                "WEIGHTS",
                "--out",
                "OUT",
            ],
            "weights do not fit the model",
        ),
        (
            ["export", "--module", "tests/byo_vae.py", "--input-shape", "3,32,32", "--out", "OUT"],
            "path/to/file.py:function",
        ),
        (
            ["export", "--module", "tests/byo_vae.py:build_model", "--out", "OUT"],
            "needs --input-shape",
        ),
        (["plot", "scatter", Z2, "--out", "OUT"], "unknown plot kind 'scatter'"),
        (["plot", "latent", "NOWHERE", "--out", "OUT"], "not found"),
        (
            ["plot", "latent", Z2, "--data", "digits", "--out", "OUT"],
            "inputs have shape [N, 64]; this model expects [N, 784]",
        ),
        (["plot", "latent", "EMPTY", "--out", "OUT"], "has no model.json"),
        (
            ["embed", Z2, "IMAGES", "--out", "OUT"],
            "inputs have shape [N, 32, 32, 3]; this model expects [N, 784]",
        ),
        (["embed", Z2, "TINY", "--tsne", "--out", "OUT"], "needs at least 2 points"),
        (["tsne", "NOWHERE", "--out", "OUT"], "file not found"),
        (["tsne", "NANS", "--out", "OUT"], "nans.npy: NaN or inf at row 3; clean the data first"),
        (["demo", "--quick", "--out", "IMAGES"], "is a file; give a folder"),
        (["demo", "--quick", "--out", "MINE"], "holds notes.txt, which the demo did not write"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    pytest.importorskip("torch")
    from safetensors.torch import save_file
    import torch

    save_file({"other.weight": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    np.save(tmp_path / "images.npy", np.zeros((4, 32, 32, 3), np.uint8))
    np.save(tmp_path / "tiny.npy", np.zeros((1, 784), np.uint8))
    np.save(tmp_path / "odd.npy", np.zeros((20, 10, 10), np.uint8))
    nans = np.zeros((6, 4))
    nans[3, 2] = np.nan
    np.save(tmp_path / "nans.npy", nans)
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "MINE").mkdir()
    (tmp_path / "MINE" / "notes.txt").write_text("the user's")
    names = {
        "MINE": tmp_path / "MINE",
        "OUT": tmp_path / "out",
        "NOWHERE": tmp_path / "nowhere",
        "EMPTY": tmp_path / "EMPTY",
        "WEIGHTS": tmp_path / "w.safetensors",
        "IMAGES": tmp_path / "images.npy",
        "TINY": tmp_path / "tiny.npy",
        "ODD": tmp_path / "odd.npy",
        "NANS": tmp_path / "nans.npy",
    }
    result = run_cli(*[str(names.get(a, a)) for a in args])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "MINE").iterdir()) == ["notes.txt"]


def test_embedding_stores_get_the_users_umask(tmp_path):
    from vaefast.embedding.pipeline import embed

    old = os.umask(0o027)
    try:
        embed(EXPORTED / "mnist5k-z2", "mnist5k", tmp_path / "e.zarr", progress=False)
    finally:
        os.umask(old)
    mode = (tmp_path / "e.zarr").stat().st_mode & 0o777
    assert mode == 0o750, oct(mode)


def test_embed_tsne_of_ten_rows_finishes(tmp_path):
    from vaefast.embedding.pipeline import embed
    from vaefast.embedding.store import open_embeddings

    np.save(tmp_path / "ten.npy", np.random.default_rng(0).integers(0, 256, (10, 784), np.uint8))
    stats = embed(
        EXPORTED / "mnist5k-z20",
        str(tmp_path / "ten.npy"),
        tmp_path / "t.zarr",
        tsne=True,
        progress=False,
    )
    group = open_embeddings(tmp_path / "t.zarr")
    assert stats["tsne"]["n"] == 10 and np.isfinite(group["tsne"][:]).all()
    assert np.ptp(group["tsne"][:], axis=0).min() > 0


def test_tsne_cli_maps_ten_points_with_the_small_n_perplexity(tmp_path):
    np.save(tmp_path / "ten.npy", np.random.default_rng(0).normal(size=(10, 20)))
    result = run_cli("tsne", str(tmp_path / "ten.npy"), "--out", str(tmp_path / "y.npy"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "y.npy").shape == (10, 2)


# --- one owner per concept ----------------------------------------------------------------


def _compared_names(path: Path, names: set[str]) -> list[str]:
    """``x == "name"`` / ``x in ("name", ...)`` tests of a table entry's name in a module,
    and ONNX Runtime provider names spelled out."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            consts = [
                c
                for side in sides
                for c in (side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side])
                if isinstance(c, ast.Constant) and c.value in names
            ]
            if consts:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "ExecutionProvider" in node.value
        ):
            found.append(f"{path.name}:{node.lineno}: {node.value}")
    return found


def test_engines_and_variants_are_tested_by_name_only_by_their_owners():
    """Callers read an engine's or a variant's properties; only ``engines.py`` names ONNX
    Runtime providers or tests an engine by name, only ``variants.py`` a variant."""
    from vaefast.runtime.engines import ENGINES, provider_names
    from vaefast.runtime.variants import VARIANTS

    names = set(ENGINES) | set(provider_names()) | set(VARIANTS)
    owners = {"engines.py", "variants.py"}
    found = [
        hit
        for path in PACKAGE.rglob("*.py")
        if path.name not in owners and "tsne" not in path.parts
        for hit in _compared_names(path, names)
    ]
    assert not found, found


def test_data_readers_do_not_import_the_store():
    for path in (PACKAGE / "data").glob("*.py"):
        assert not {
            m for m in imports(module_name(path)) if m.startswith("vaefast.embedding.store")
        }, path


# Kernels whose loops are unrolled by hand (3 rows x 4 accumulators): their length is the
# unrolling, not a second concern.
UNROLLED_KERNELS = {"_pair_block", "_block_sums"}


def _body_lines(node: ast.FunctionDef) -> int:
    """Lines of a function below its docstring."""
    first = node.body[0]
    has_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and len(node.body) > 1
    )
    start = node.body[1].lineno if has_doc else first.lineno
    return node.end_lineno - start + 1


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name not in UNROLLED_KERNELS
        and _body_lines(node) > 80
    ]
    assert not long, long


def test_kernels_live_with_their_phase_and_every_backend_provides_the_contract():
    """One kernel module per phase, each used by its module (affinities, objective and
    optimizer, transform); a backend module only gathers them, and every backend has
    every name of the contract (a name missing would fail only when that phase runs)."""
    import importlib

    from vaefast.tsne.backends import BACKENDS, CONTRACT

    facade = ast.parse((PACKAGE / "tsne" / "_kernels.py").read_text())
    assert not [n for n in facade.body if isinstance(n, ast.FunctionDef)]
    for phase in ("affinity", "gradient", "placement"):
        assert (PACKAGE / "tsne" / f"_{phase}_kernels.py").is_file()
    for name, module in BACKENDS.items():
        kernels = importlib.import_module(module)
        missing = [k for names in CONTRACT.values() for k in names if not hasattr(kernels, k)]
        assert not missing, (name, missing)
    used = set()
    for path in (PACKAGE / "tsne").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in ("k", "kern"):
                    used.add(node.attr)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                if node.value.attr in ("kernels", "_kernels"):
                    used.add(node.attr)
    contract = {k for names in CONTRACT.values() for k in names}
    assert used <= contract, used - contract


def test_cli_choices_come_from_the_owning_tables():
    """Every option with a fixed set of values accepts exactly its owner's table."""
    import importlib

    from vaefast.cli import CHOICES, _choice

    for dest, (module, name) in CHOICES.items():
        table = getattr(importlib.import_module(module), name)
        check = _choice(dest)
        assert all(check(value) == value for value in table)
        with pytest.raises(Exception, match="invalid choice"):
            check("no-such-" + dest)


def _orphan(env: dict) -> int:
    """Start a `vaefast`-named process that its parent leaves behind (reparented, as a
    user's detached run is); its pid."""
    code = (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(120)', 'vaefast', 'tsne'], start_new_session=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(p.pid)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return int(out.stdout)


def test_the_leftover_check_flags_only_what_the_suite_started():
    """A user's detached `vaefast` run that starts while a test runs is not the test's:
    the no-leftover check neither flags nor kills it; an orphan of the test's is flagged."""
    import psutil

    from tests.conftest import MARK, started_by

    me, before = psutil.Process(), {p.pid for p in psutil.process_iter()}
    users = _orphan({k: v for k, v in os.environ.items() if k != MARK})
    ours = _orphan(dict(os.environ))
    try:
        found = {p.pid for p in started_by(os.environ[MARK], me, before)}
        assert ours in found and users not in found
        assert psutil.Process(users).ppid() != me.pid  # an orphan, as a detached run is
    finally:
        for pid in (ours, users):
            psutil.Process(pid).kill()


WORK_LOG = re.compile(
    r"\b[Ss]essions? [0-9]+|\b[Ii]ssue #?[0-9]+|\b(?:this|last|previous) session\b"
)
BINARY = (".png", ".onnx", ".nbi", ".nbc", ".safetensors", ".npz", ".npy", ".gz", ".ico")


def test_the_project_speaks_of_itself_not_of_its_work_log():
    """No tracked file names a work session or an issue number: the project speaks of its
    versions (commits), machines and figures."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = [
        f"{name}:{n}"
        for name in tracked
        if not name.endswith(BINARY)
        for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if WORK_LOG.search(line)
    ]
    assert found == []


NUMERIC_KERNELS = {"vaefast.tsne._affinity_kernels", "vaefast.tsne._gradient_kernels",
                   "vaefast.tsne._placement_kernels"}  # fmt: skip


def test_no_two_modules_import_each_other_and_none_is_over_800_lines():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in imports(m) if i in modules and i != m} for m in modules}
    mutual = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph[b])
    # a package and the submodules its __init__ gathers are one module to its users
    mutual = [(a, b) for a, b in mutual if not b.startswith(a + ".")]
    assert mutual == []
    long = {
        m: n
        for m, path in modules.items()
        if m not in NUMERIC_KERNELS and (n := len(path.read_text().splitlines())) > 800
    }
    assert long == {}


def test_the_public_api_imports_as_documented():
    """The names docs/api.md documents, from where users import them."""
    code = (
        "import vaefast; from vaefast import runtime, plot; from vaefast.tsne import TSNE; "
        "from vaefast.explore import serve; "
        "assert callable(vaefast.export_vae) and callable(vaefast.embed); "
        "assert callable(runtime.load) and callable(plot.render) and callable(serve); "
        "from sklearn.base import BaseEstimator; assert issubclass(TSNE, BaseEstimator)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

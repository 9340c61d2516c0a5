"""The README's "Bring your own VAE" example, run exactly as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def readme_examples() -> dict[str, str]:
    """The code blocks marked ``<!-- example: NAME -->`` in the README, by NAME."""
    text = (ROOT / "README.md").read_text()
    return {
        name: body
        for name, body in re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    }


def run_example(tmp_path, files: tuple[str, ...], shell: str) -> None:
    """Write the README's example ``files`` into tmp_path and run its ``shell`` block there,
    line by line, as a user would."""
    examples = readme_examples()
    for name in files:
        (tmp_path / name).write_text(examples[name])
    commands = re.sub(r"\\\n\s*", " ", examples[shell]).strip().splitlines()
    for line in commands:
        args = shlex.split(line)
        if args[0] == "python":
            args = [sys.executable, *args[1:]]
        elif args[0] == "vaefast":
            args = [sys.executable, "-m", "vaefast.cli", *args[1:]]
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"


def test_readme_examples_are_all_run():
    assert set(readme_examples()) == {
        "my_vae.py",
        "train_my_vae.py",
        "shell",
        "make_kl_vae.py",
        "diffusers-shell",
        "tanh_vae.py",
        "tanh-shell",
    }


def test_readme_byo_example_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    run_example(tmp_path, ("my_vae.py", "train_my_vae.py"), "shell")
    report = (tmp_path / "exported/mine/export_report.json").read_text()
    assert '"max_abs"' in report
    assert (tmp_path / "mine.zarr").is_dir() and (tmp_path / "plots-mine/index.md").is_file()
    for view in ("latent", "uncertainty", "samples", "manifold", "reconstructions", "diagnostics"):
        assert (tmp_path / f"plots-mine/{view}.png").stat().st_size > 1000


def test_readme_diffusers_example_runs_as_written(tmp_path):
    pytest.importorskip("diffusers")
    import json

    import zarr

    run_example(tmp_path, ("make_kl_vae.py",), "diffusers-shell")
    meta = json.loads((tmp_path / "exported/kl/model.json").read_text())
    assert meta["latent_shape"] == [4, 14, 14] and meta["input_range"] == [-1.0, 1.0]
    mu = zarr.open_group(str(tmp_path / "kl.zarr"), mode="r")["mu"]
    assert mu.shape == (5000, 4, 14, 14) and str(mu.dtype) == "float16"
    for view in (
        "latent",
        "uncertainty",
        "samples",
        "manifold",
        "reconstructions",
        "channels",
        "diagnostics",
    ):
        assert (tmp_path / f"plots-kl/{view}.png").stat().st_size > 1000


def test_readme_tanh_example_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    import json

    run_example(tmp_path, ("tanh_vae.py",), "tanh-shell")
    meta = json.loads((tmp_path / "exported/tanh/model.json").read_text())
    assert meta["output_range"] == [-1.0, 1.0] and not meta["size"]["dynamic"]
    assert (tmp_path / "plots-tanh/reconstructions.png").stat().st_size > 1000

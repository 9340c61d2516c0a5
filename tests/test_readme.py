"""The code examples of the README and the docs pages, run exactly as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # the README and the site


def readme_examples() -> dict[str, str]:
    """The code blocks marked ``<!-- example: NAME -->`` in the README and the docs pages,
    by NAME."""
    text = "\n".join(page.read_text() for page in PAGES)
    return {
        name: body
        for name, body in re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    }


def run_example(tmp_path, files: tuple[str, ...], shell: str) -> dict[str, str]:
    """Write the README's example ``files`` into tmp_path and run its ``shell`` block there,
    line by line, as a user would; each command's first word with its stdout + stderr."""
    examples = readme_examples()
    for name in files:
        (tmp_path / name).write_text(examples[name])
    commands = re.sub(r"\\\n\s*", " ", examples[shell]).strip().splitlines()
    outputs = {}
    for line in commands:
        args = shlex.split(line)
        if args[0] == "python":
            args = [sys.executable, *args[1:]]
        elif args[0] == "vaefast":
            args = [sys.executable, "-m", "vaefast.cli", *args[1:]]
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
        outputs[" ".join(line.split()[:2])] = result.stdout + result.stderr
    return outputs


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
    """Also the CLI's diffusers export as users meet it: no traceback or diffusers notice
    on the terminal, the size from the config's sample_size, the weights file's sha256
    and the latent scaling factor recorded."""
    pytest.importorskip("diffusers")
    import json

    import zarr

    from vaefast.export import sha256_file

    outputs = run_example(tmp_path, ("make_kl_vae.py",), "diffusers-shell")
    said = outputs["vaefast export"]
    assert "Traceback" not in said and "torch/_guards" not in said and "accelerate" not in said
    meta = json.loads((tmp_path / "exported/kl/model.json").read_text())
    assert meta["latent_shape"] == [4, 14, 14] and meta["input_range"] == [-1.0, 1.0]
    assert meta["input_shape"] == [1, 28, 28]  # the config's sample_size
    weights = tmp_path / "kl-vae/diffusion_pytorch_model.safetensors"
    assert meta["weights_sha256"] == sha256_file(weights)
    assert meta["latent_scaling"]["scaling_factor"] == 0.18215
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

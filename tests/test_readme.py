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
    return {name: body for name, body in
            re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", text, re.S)}


def test_readme_byo_example_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    examples = readme_examples()
    assert set(examples) == {"my_vae.py", "train_my_vae.py", "shell"}
    for name in ("my_vae.py", "train_my_vae.py"):
        (tmp_path / name).write_text(examples[name])
    commands = re.sub(r"\\\n\s*", " ", examples["shell"]).strip().splitlines()
    for line in commands:
        args = shlex.split(line)
        if args[0] == "python":
            args = [sys.executable, *args[1:]]
        elif args[0] == "vaefast":
            args = [sys.executable, "-m", "vaefast.cli", *args[1:]]
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
    report = (tmp_path / "exported/mine/export_report.json").read_text()
    assert '"max_abs"' in report
    assert (tmp_path / "mine.zarr").is_dir() and (tmp_path / "plots-mine/index.md").is_file()
    for view in ("latent", "uncertainty", "samples", "manifold", "reconstructions",
                 "diagnostics"):
        assert (tmp_path / f"plots-mine/{view}.png").stat().st_size > 1000

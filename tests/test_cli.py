"""The CLI skeleton: fast help, no heavy imports."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, run_cli


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "export", "embed", "tsne", "plot", "bench"):
        assert command in result.stdout


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from vaefast.cli import build_parser; build_parser(); "
        "heavy = {'torch', 'numpy', 'onnxruntime', 'numba', 'matplotlib'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"

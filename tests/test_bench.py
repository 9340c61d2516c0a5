"""`vaefast bench report` on a real pytest-benchmark JSON, and the demo's quick summary."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_cli


@pytest.fixture(scope="module")
def results_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "results.json"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "benchmarks/test_ceiling.py", "--benchmark-only",
                          "--benchmark-min-rounds=3", "--benchmark-max-time=0.2",
                          f"--benchmark-json={path}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return path


def test_report_writes_tables(results_json, tmp_path):
    from vaefast.bench import report

    md = report(results_json, tmp_path).read_text()
    assert "### ceiling" in md and "test_sgemm" in md and "gflops=" in md
    assert "| benchmark | median | × fastest | figures |" in md


def test_report_refuses_disabled_or_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text('{"not": "benchmarks"}')
    result = run_cli("bench", "report", str(tmp_path / "x.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not a pytest-benchmark JSON" in result.stderr

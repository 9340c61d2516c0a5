"""`vaefast bench report` on a small checked-in pytest-benchmark JSON (a real run of
benchmarks/test_ceiling.py)."""

from __future__ import annotations

import re

from tests.helpers import ROOT, run_cli

RESULTS = ROOT / "tests" / "data" / "bench-results.json"


def test_report_writes_tables(tmp_path):
    from vaefast.bench.report import report

    md = report(RESULTS, tmp_path).read_text()
    assert "### ceiling" in md and "test_sgemm" in md and "gflops=" in md
    assert "| benchmark | median | rounds | × fastest (quartile spread) |" in md
    assert md.count("Measured on ") == 1 and "ISA: " in md and "onnxruntime" in md
    ratio = re.search(r"\| test_sgemm \| [^|]+ \| \d+ \| ([\d.]+) \(([\d.]+)–([\d.]+)\)", md)
    assert ratio and float(ratio[2]) <= float(ratio[1]) <= float(ratio[3])


def test_report_refuses_disabled_or_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text('{"not": "benchmarks"}')
    result = run_cli("bench", "report", str(tmp_path / "x.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not a pytest-benchmark JSON" in result.stderr


def test_report_marks_results_taken_under_load(tmp_path):
    """A result whose contention says others kept the cores busy is marked and listed;
    latency rounds of several calls are reported per call."""
    import json

    from vaefast.bench.report import report

    results = json.loads(RESULTS.read_text())
    loaded, quiet = results["benchmarks"][:2]
    loaded["extra_info"]["contention"] = {"others_share": 0.5, "under_load": True}
    quiet["extra_info"]["contention"] = {"others_share": 0.01, "under_load": False}
    quiet["extra_info"]["calls_per_round"] = 1000
    (tmp_path / "r.json").write_text(json.dumps(results))
    md = report(tmp_path / "r.json", tmp_path / "out").read_text()
    assert f"| ⚠ {loaded['name']} |" in md and f"| {quiet['name']} |" in md
    assert "taken under load (other processes kept more than 10% of the cores busy" in md
    per_call = quiet["stats"]["median"] / 1000 * 1e3
    assert f"| {quiet['name']} | {per_call:.3f} ms |" in md

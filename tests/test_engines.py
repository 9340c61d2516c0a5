"""Engines and variants: OpenVINO beside ONNX Runtime on the same exported files, variants
named from one table, and `vaefast bench recommend` measuring which to use."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import EXPORTED, run_cli
from vaefast import runtime
from vaefast.errors import VaefastError

CONV = EXPORTED / "mnist5k-conv-z16"


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    from vaefast import data

    return data.load("mnist5k").X_test[:256].reshape(-1, 1, 28, 28)


def test_openvino_f32_matches_onnxruntime(X):
    pytest.importorskip("openvino")
    ov = runtime.load(CONV, providers="openvino", precision="f32")
    ort = runtime.load(CONV, providers="cpu")
    assert ov.providers == ["OpenVINO CPU f32"]
    mu_ov, lv_ov = ov.encode(X)
    mu, lv = ort.encode(X)
    np.testing.assert_allclose(mu_ov, mu, atol=1e-4)
    np.testing.assert_allclose(ov.decode(mu), ort.decode(mu), atol=1e-4)


SHIPPED_FILES = sorted(EXPORTED.glob("*/*.onnx"))


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_file_runs_on_every_engine_and_agrees(path):
    """Standard operators only (static int8 in QDQ form, no contrib ops, no opset imported but
    used): ONNX Runtime, OpenVINO and ``onnx.reference`` run each file we ship, alike."""
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from vaefast.metrics import psnr

    ov = pytest.importorskip("openvino")
    proto = onnx.load(str(path))
    assert {o.domain for o in proto.opset_import} == {n.domain for n in proto.graph.node} | {""}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [16 if isinstance(d, str) else d for d in session.get_inputs()[0].shape]
    rng = np.random.default_rng(0)
    x = rng.random(shape) if "encoder" in path.name else rng.standard_normal(shape)
    x = x.astype(np.float32)
    expected = session.run(None, {name: x})[0]
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for got in (compiled({name: x})[0], ReferenceEvaluator(proto).run(None, {name: x})[0]):
        if "decoder" in path.name:  # images in [0, 1]
            assert psnr(got, expected) >= 30
        np.testing.assert_allclose(got, expected, atol=1e-3 * max(1, np.abs(expected).max()))


def test_a_file_openvino_cannot_convert_is_refused_naming_its_operators(tmp_path):
    """A static int8 file in ONNX Runtime's own QOperator form (what its quantizer writes when
    asked, and what vaefast falls back to where QDQ fails): OpenVINO's refusal names what it
    cannot convert and what to do, in one line (it gave only the error's source location)."""
    import shutil

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    pytest.importorskip("openvino")
    model = shutil.copytree(CONV, tmp_path / "model")
    z = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)

    class Latents(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"z": z[i : i + 8]} for i in range(0, 64, 8)])

        def get_next(self):
            return next(self.batches, None)

    target = model / "decoder.int8-static.onnx"
    quantize_static(str(model / "decoder.onnx"), str(target), Latents(), QuantFormat.QOperator)
    qoperator = onnx.load(str(target))
    onnx.helper.set_model_props(
        qoperator, {p.key: p.value for p in onnx.load(str(CONV / target.name)).metadata_props}
    )
    onnx.save_model(qoperator, str(target))
    with pytest.raises(VaefastError) as refused:
        runtime.load(model, providers="openvino", variant="int8-static")
    message = str(refused.value)
    assert "decoder.int8-static.onnx: OpenVINO cannot load it: it has no conversion for " in message
    assert "com.microsoft.QGemm" in message and "--providers cpu" in message
    assert "\n" not in message and "core.cpp" not in message


def test_openvino_defaults_to_bf16_only_where_the_cpu_has_it(X):
    pytest.importorskip("openvino")
    from vaefast.runtime.engines import openvino_precision
    from vaefast.metrics import knn_overlap

    vae = runtime.load(CONV, providers="openvino")
    assert vae.providers == [f"OpenVINO CPU {openvino_precision()}"]
    mu = vae.encode(X)[0]
    reference = runtime.load(CONV, providers="cpu").encode(X)[0]
    assert knn_overlap(mu, reference, 10) >= 0.9


def test_engine_options_are_checked_by_name():
    with pytest.raises(VaefastError, match="precision applies to providers='openvino'"):
        runtime.load(CONV, providers="cpu", precision="bf16")
    with pytest.raises(VaefastError, match="auto, cpu, cuda, tensorrt, openvino"):
        runtime.load(CONV, providers="gpu")
    pytest.importorskip("openvino")
    with pytest.raises(VaefastError, match="use bf16 or f32"):
        runtime.load(CONV, providers="openvino", precision="int4")


def test_a_variant_not_exported_is_refused_by_name(short_export):
    result = run_cli(
        "embed", str(short_export), "mnist5k", "--out", "unused.zarr", "--variant", "int8-static"
    )
    assert result.returncode == 2
    assert "exported without the int8-static variant (it has fp32, int8, fp16)" in result.stderr
    result = run_cli(
        "embed", str(short_export), "mnist5k", "--out", "unused.zarr", "--variant", "int4"
    )
    assert result.returncode == 2 and "fp32, int8, int8-static, fp16" in result.stderr


def test_export_variant_names_and_calibration_are_checked(short_run, tmp_path):
    result = run_cli(
        "export", str(short_run), "--out", str(tmp_path / "e"), "--variants", "int8,int4"
    )
    assert result.returncode == 2 and "unknown variant 'int4'" in result.stderr
    result = run_cli(
        "export",
        str(short_run),
        "--out",
        str(tmp_path / "e"),
        "--variants",
        "int8-static",
        "--calibration",
        "digits",
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--calibration digits" in result.stderr
    assert not (tmp_path / "e").exists()


def test_static_int8_calibrated_on_a_data_spec(short_run, tmp_path):
    from vaefast.atomic import read_json

    result = run_cli(
        "export",
        str(short_run),
        "--out",
        str(tmp_path / "e"),
        "--int8",
        "--variants",
        "int8-static",
        "--calibration",
        "mnist5k",
    )
    assert result.returncode == 0, result.stderr
    report = read_json(tmp_path / "e" / "export_report.json")
    static = report["int8-static"]
    assert static["encoder"]["calibration_rows"] == 256
    # a 2-epoch MLP: static int8 also quantizes activations, and lands near the target
    assert static["knn10_overlap_vs_fp32"] > 0.8
    assert static["meets_target"] == (static["knn10_overlap_vs_fp32"] >= 0.9)
    assert ("prefer the fp32" in result.stderr) != static["meets_target"]
    assert set(read_json(tmp_path / "e" / "model.json")["variants"]) == {
        "fp32",
        "int8",
        "int8-static",
    }


def test_bench_recommend_names_the_fastest_candidate_that_agrees():
    """Every candidate is timed and checked; the recommendation names the fastest that
    agrees — or, where other work kept the cores busy while it timed (the suite's other
    workers may), refuses in one line rather than recommend from those timings."""
    result = run_cli("bench", "recommend", str(CONV), "--batch", "64")
    lines = result.stdout.splitlines()
    assert any(line.startswith("| onnxruntime | int8-static |") for line in lines)
    if result.returncode == 0:
        assert lines[-1].startswith("recommended: runtime.load(MODEL, providers=")
    else:
        assert result.returncode == 2 and lines[-1].startswith("no recommendation: the machine")
        assert "timings taken under load" in result.stderr.strip().splitlines()[-1]


def test_bench_recommend_refuses_timings_taken_beside_a_busy_process():
    import subprocess
    import sys

    from vaefast.bench.recommend import recommend

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = recommend(CONV, batch=64)
    finally:
        busy.kill()
        busy.wait()
    assert result["choice"] is None and result["under_load"]
    assert all(row["contention"]["others_share"] > 0.1 for row in result["rows"])


def test_a_new_engine_is_one_entry(monkeypatch, capsys):
    """An engine added to ``ENGINES`` (here ONNX Runtime again under another name, with a
    precision of its own) reaches runtime.load, bench recommend's candidates and the CLI's
    help with no other edit."""
    from dataclasses import replace

    from vaefast.runtime import engines
    from vaefast.bench import recommend
    from vaefast.cli import build_parser

    ort = engines.ENGINES["onnxruntime"]
    fake = replace(
        ort,
        name="shadow",
        providers=("shadow",),
        describe="the shadow engine, for this test",
        cpu="",
        chain=lambda p: engines.ENGINES["onnxruntime"].chain("cpu"),
        precisions=lambda: ("s8",),
        all_variants=False,
        report_key="shadow",
        label="Shadow",
    )
    monkeypatch.setitem(engines.ENGINES, "shadow", fake)
    vae = runtime.load(CONV, providers="shadow")
    assert vae.engine == "shadow"
    assert vae.encode(np.zeros((2, 1, 28, 28), np.uint8))[0].shape == (2, 16)
    rows = [c for c in recommend.candidates(CONV) if c["engine"] == "shadow"]
    assert rows == [
        {"engine": "shadow", "variant": "fp32", "providers": "shadow", "precision": "s8"}
    ]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["embed", "--help"])
    assert "shadow: the shadow engine, for this test" in " ".join(capsys.readouterr().out.split())


def test_a_resume_with_another_engine_is_refused_naming_both(tmp_path):
    """The engine and its precision are part of a store's identity: rows from two engines
    never share a store."""
    pytest.importorskip("openvino")
    from tests.helpers import embed_killed_midway

    X = np.random.default_rng(0).integers(0, 256, (60_000, 28, 28), np.uint8)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "e.zarr"
    args = [
        str(CONV),
        str(tmp_path / "x.npy"),
        "--out",
        str(out),
        "--chunk-rows",
        "2048",
        "--quiet",
        "--threads",
        "1",
    ]
    embed_killed_midway(args, out)
    result = run_cli("embed", *args, "--providers", "openvino")
    error = result.stderr.strip().splitlines()[-1]  # after OpenVINO's agreement note
    assert result.returncode == 2 and error.startswith("vaefast embed: error:")
    assert "engine onnxruntime -> openvino" in error, result.stderr

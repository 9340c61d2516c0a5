"""Export to ONNX: files, metadata, verification against eager PyTorch, variants, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vaefast import runtime
from vaefast.errors import VaefastError
from vaefast.export import export, export_vae

FILES = {
    "encoder.onnx",
    "decoder.onnx",
    "encoder.int8.onnx",
    "decoder.int8.onnx",
    "encoder.fp16.onnx",
    "decoder.fp16.onnx",
    "model.json",
    "export_report.json",
}


def test_export_writes_self_contained_checked_models(short_export):
    import onnx

    assert {p.name for p in short_export.iterdir()} == FILES  # no external-data side files
    for name in FILES - {"model.json", "export_report.json"}:
        model = onnx.load(str(short_export / name))
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert not any("Random" in n.op_type for n in model.graph.node)  # deterministic
        batch = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.dim_value  # dynamic batch axis


def test_metadata_props_repeat_model_json(short_export, short_run):
    import onnx

    from vaefast.export import sha256_file

    meta = json.loads((short_export / "model.json").read_text())
    assert meta["weights_sha256"] == sha256_file(short_run / "model.safetensors")
    assert (meta["input_dim"], meta["latent_dim"], meta["image_shape"]) == (784, 20, [28, 28])
    assert meta["label_names"] == [str(i) for i in range(10)] and meta["pixel_scale"] == 255
    assert meta["training"]["data"] == "mnist5k" and "onnxruntime" in meta["versions"]
    props = {p.key: p.value for p in onnx.load(str(short_export / "encoder.onnx")).metadata_props}
    assert props["vaefast.weights_sha256"] == meta["weights_sha256"]
    assert json.loads(props["vaefast.latent_dim"]) == 20


def test_report_compares_eager_and_onnx_at_every_batch_size(short_export):
    report = json.loads((short_export / "export_report.json").read_text())
    fp32 = report["fp32"]
    # the runtime's default batch (~50 ms of ONNX Runtime a call, 256 to 4,096 rows) is
    # recorded in model.json, and verified with 1, 7 and 256
    rows = runtime.load(short_export, providers="cpu").batch_rows
    assert fp32["runtime_batch_rows"] == rows and 256 <= rows <= 4096
    assert set(fp32["random"]) == {"1", "7", "256", str(rows)}
    assert fp32["exporter"] == "torchscript" and fp32["exporter_fallback"] is None
    assert fp32["test_split"]["n"] == 1000
    assert fp32["max_abs"] <= 1e-5 and fp32["test_split"]["knn10_overlap"] > 0.99
    # a 2-epoch model's int8 figures are only reported; the shipped models must meet 0.9
    assert report["int8"]["meets_target"] == (report["int8"]["knn10_overlap_vs_fp32"] >= 0.9)
    assert report["fp16"]["knn10_overlap_vs_fp32"] >= 0.95
    for variant in ("int8", "fp16"):
        assert report[variant]["recon_psnr_db_vs_fp32"] > 30


def test_onnx_matches_eager_on_test_data(short_export, short_run):
    import torch

    from vaefast import data, runtime
    from vaefast.models.train import load_run

    model, _ = load_run(short_run)
    X = data.load("mnist5k").X_test[:300]
    with torch.no_grad():
        mu, logvar = (t.numpy() for t in model.encode(torch.from_numpy(X)))
        x_hat = model.decode(torch.from_numpy(mu)).numpy()
    vae = runtime.load(short_export, providers="cpu", spin=False)
    o_mu, o_logvar = vae.encode(X)
    np.testing.assert_allclose(o_mu, mu, atol=1e-5)
    np.testing.assert_allclose(o_logvar, logvar, atol=1e-5)
    np.testing.assert_allclose(vae.decode(mu), x_hat, atol=1e-5)


def test_failed_verification_leaves_nothing(short_run, tmp_path):
    with pytest.raises(VaefastError, match="failed verification"):
        export(short_run, tmp_path / "out", tolerance=1e-12)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_large_latents_are_verified_relative_to_their_magnitude(tmp_path):
    """Beyond magnitude 1 the tolerance scales with the tensor (max abs error over max(1,
    max |eager|)): a valid model with latents in the hundreds exports (it was refused at an
    absolute 1e-5), and the report says both figures."""
    import torch

    from vaefast import export_vae

    class Loud(torch.nn.Module):
        """A user's VAE with unnormalised latents (magnitudes in the hundreds): float32 rounding
        gives errors of ~1e-4 there, ~1e-7 of the values."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.enc = torch.nn.Sequential(
                torch.nn.Linear(784, 400), torch.nn.ReLU(), torch.nn.Linear(400, 40)
            )
            self.dec = torch.nn.Sequential(
                torch.nn.Linear(20, 400),
                torch.nn.ReLU(),
                torch.nn.Linear(400, 784),
                torch.nn.Sigmoid(),
            )

        def encode(self, x):
            h = self.enc(x.flatten(1)) * 300.0
            return h[:, :20], h[:, 20:] / 300.0

        def decode(self, z):
            return self.dec(z / 300.0)

    x = np.random.default_rng(0).random((256, 784), dtype=np.float32)
    report = export_vae(Loud().eval(), tmp_path / "loud", example=x)["fp32"]
    assert report["max_abs"] > report["max_scaled"] and report["max_scaled"] <= 1e-5
    mu = runtime.load(tmp_path / "loud", providers="cpu").encode(x[:8])[0]
    assert np.abs(mu).max() > 100


def test_existing_out_needs_force_and_is_kept(short_run, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(VaefastError, match="already exists"):
        export(short_run, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_corrupt_run_is_refused(short_run, tmp_path):
    bad = tmp_path / "run"
    shutil.copytree(short_run, bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(VaefastError, match="corrupt weights"):
        export(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def small_vae(logvar: str = "softplus", batch: str = "free"):
    """A 12 -> 4 -> 12 VAE. ``logvar="softplus"``: log-variance logaddexp(h, 0), an op
    TorchScript's exporter has no translation for and torch.export's has;
    ``batch="fixed"``: its encoder turns the batch size into a Python int."""
    import torch
    from torch import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(12, 8), nn.Linear(4, 12)

        def encode(self, x):
            if batch == "fixed":
                x = x.reshape(int(x.shape[0]), -1)
            h = self.enc(x)
            if logvar == "softplus":
                return h[:, :4], torch.logaddexp(h[:, 4:], torch.zeros_like(h[:, 4:]))
            return h[:, :4], h[:, 4:]

        def decode(self, z):
            return torch.sigmoid(self.dec(z))

    torch.manual_seed(0)
    return Model().eval()


def test_a_model_torchscript_cannot_export_goes_through_torch_export(tmp_path):
    """TorchScript's exporter first; where it fails, torch.export's makes the files, and
    the report says so and why."""
    x = np.random.default_rng(0).random((64, 12), dtype=np.float32)
    report = export_vae(small_vae("softplus"), tmp_path / "m", example=x)
    fp32 = report["fp32"]
    assert fp32["exporter"] == "dynamo" and fp32["max_abs"] <= 1e-5
    assert (
        fp32["exporter_fallback"].startswith("torchscript: ")
        and "logaddexp" in (fp32["exporter_fallback"])
    )
    on_disk = json.loads((tmp_path / "m" / "export_report.json").read_text())
    assert on_disk["fp32"]["exporter"] == "dynamo"


def test_a_model_that_fixes_its_batch_is_refused_in_one_line(tmp_path):
    """Both exporters bake a batch the model's own code turns into an int: the check at
    batch 1 fails, and the error says so; nothing is left at ``out``."""
    x = np.random.default_rng(0).random((64, 12), dtype=np.float32)
    with pytest.raises(VaefastError, match="fails in ONNX Runtime") as caught:
        export_vae(small_vae("plain", batch="fixed"), tmp_path / "m", example=x)
    assert "\n" not in str(caught.value) and "torchscript: " in str(caught.value)
    assert not (tmp_path / "m").exists()


def test_the_exporters_function_table_is_built_once_and_torch_is_left_as_it_was(tmp_path):
    """torch.export's ONNX exporter would rebuild its table of ONNX functions for each half
    (~1 s each); exports in one process share one, and torch's class is restored."""
    from torch.onnx._internal.exporter import _registration

    from vaefast.export import trace

    x = np.random.default_rng(0).random((64, 12), dtype=np.float32)
    for name in ("a", "b"):  # both through torch.export (TorchScript cannot take logaddexp)
        report = export_vae(small_vae("softplus"), tmp_path / name, example=x)
        assert report["fp32"]["exporter"] == "dynamo"
    assert len(trace._REGISTRIES) == 1
    (registry,) = trace._REGISTRIES.values()
    with trace._torchlib_registry_once():
        assert _registration.ONNXRegistry.from_torchlib(registry.opset_version) is registry
    restored = _registration.ONNXRegistry.__dict__["from_torchlib"]
    assert restored.__func__.__qualname__ == "ONNXRegistry.from_torchlib"


def test_openvino_defaults_to_the_precision_measured_faster_on_this_cpu(short_export, tmp_path):
    """Export times each OpenVINO precision this CPU runs and records the faster for this
    CPU; loading without a precision takes it here, and the CPU flag's default elsewhere."""
    pytest.importorskip("openvino")
    import json
    import shutil

    from vaefast.runtime import engines

    probe = json.loads((short_export / "export_report.json").read_text())["openvino"][
        engines.PROBE_KEY
    ]
    precisions = engines.ENGINES["openvino"].precisions()
    if len(precisions) == 1:
        assert probe == {} or probe["faster"] == precisions[0]
        pytest.skip("one OpenVINO precision on this CPU: nothing to choose")
    assert probe["cpu"] == engines.cpu_id() and set(probe["seconds"]) == set(precisions)
    assert probe["faster"] == min(probe["seconds"], key=probe["seconds"].get)
    assert runtime.load(short_export, providers="openvino").precision == probe["faster"]
    copy = shutil.copytree(short_export, tmp_path / "m")
    report = json.loads((copy / "export_report.json").read_text())
    slower = next(p for p in precisions if p != probe["faster"])
    for cpu, expected in ((engines.cpu_id(), slower), ("another CPU", precisions[0])):
        report["openvino"][engines.PROBE_KEY] |= {"cpu": cpu, "faster": slower}
        (copy / "export_report.json").write_text(json.dumps(report))
        assert runtime.load(copy, providers="openvino").precision == expected

"""The torch-free runtime on the shipped models: metadata, inputs, providers, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.helpers import EXPORTED
from vaefast import data, runtime
from vaefast.errors import VaefastError
from vaefast.shipped import SHIPPED
from vaefast.runtime.variants import VARIANTS

Z20, Z2 = EXPORTED / "mnist5k-z20", EXPORTED / "mnist5k-z2"


@pytest.fixture(scope="module")
def mnist():
    return data.read("mnist5k")


@pytest.mark.parametrize("folder, z", [(Z20, 20), (Z2, 2), (EXPORTED / "mnist5k-conv-z16", 16)])
def test_shipped_models_match_their_metadata(folder, z):
    meta = json.loads((folder / "model.json").read_text())
    report = json.loads((folder / "export_report.json").read_text())
    assert meta["latent_dim"] == z and meta["input_dim"] == 784
    assert report["fp32"]["max_abs"] <= 1e-5 and report["int8"]["meets_target"]
    for variant in ("fp32", "int8"):
        vae = runtime.load(folder, providers="cpu", variant=variant)
        assert (vae.input_dim, vae.latent_dim, vae.image_shape) == (784, z, (28, 28))
        assert vae.providers == ["CPUExecutionProvider"]


def test_uint8_images_and_scaled_floats_agree(mnist):
    vae = runtime.load(Z20, providers="cpu")
    X8 = mnist.X[:100]
    mu_a, lv_a = vae.encode(X8)
    mu_b, lv_b = vae.encode(X8.astype(np.float32) / 255)
    mu_c, _ = vae.encode(X8.reshape(100, 28, 28))
    np.testing.assert_allclose(mu_a, mu_b, atol=1e-6)
    np.testing.assert_array_equal(mu_a, mu_c)
    assert mu_a.dtype == np.float32 and mu_a.shape == (100, 20)


def test_batch_size_does_not_change_results(mnist):
    vae = runtime.load(Z20, providers="cpu")
    mu_a, _ = vae.encode(mnist.X[:300], batch_size=7)
    mu_b, _ = vae.encode(mnist.X[:300], batch_size=4096)
    np.testing.assert_allclose(mu_a, mu_b, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_rows_outputs_depend_on_its_batch_exactly_where_the_variant_table_says(mnist, name):
    """Row by row against the same rows inside one batch of 64, encode and decode: equal
    bits for every variant marked ``batch_independent`` (fp32, static int8), and not for
    dynamic int8, whose activation scales come from the whole call."""
    rows = list(range(0, 64, 9))
    for v in runtime.load(name, providers="cpu").meta["variants"]:
        vae = runtime.load(name, providers="cpu", variant=v)
        mu = vae.encode(mnist.X[:64])[0]
        alone = np.concatenate([vae.encode(mnist.X[i : i + 1])[0] for i in rows])
        decoded = vae.decode(mu)
        decoded_alone = np.concatenate([vae.decode(mu[i : i + 1]) for i in rows])
        same = np.array_equal(alone, mu[rows]) and np.array_equal(decoded_alone, decoded[rows])
        assert same == VARIANTS[v].batch_independent, (name, v)


def test_decode_sample_reconstruct(mnist):
    vae = runtime.load(Z2, providers="cpu")
    images = vae.sample(16, seed=3)
    assert images.shape == (16, 784) and 0 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(images, vae.sample(16, seed=3))
    assert not np.array_equal(images, vae.sample(16, seed=4))
    recon = vae.reconstruct(mnist.X[:50])
    err = np.mean((recon - mnist.X[:50] / 255.0) ** 2)
    assert recon.shape == (50, 784) and err < 0.1


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((3, 500), np.float32), r"shape \[N, 500\]; this model expects \[N, 784\]"),
        (np.full((2, 784), np.nan, np.float32), "inputs: NaN or inf at row 0"),
        (
            np.pad(np.full((1, 784), np.inf, np.float32), ((5000, 0), (0, 0))),
            "inputs: NaN or inf at row 5000",
        ),
        (
            np.full((2, 784), 3.0, np.float32),
            r"values span \[3.0, 3.0\].*expected floats in \[0, 1\]",
        ),
        (np.array([["a"] * 784]), "dtype"),
    ],
)
def test_bad_inputs_are_refused(X, message):
    vae = runtime.load(Z20, providers="cpu")
    with pytest.raises(VaefastError, match=message):
        vae.encode(X)


def test_bad_latents_are_refused():
    vae = runtime.load(Z20, providers="cpu")
    with pytest.raises(VaefastError, match="expects float"):
        vae.decode(np.zeros((2, 3), np.float32))
    with pytest.raises(VaefastError, match="NaN"):
        vae.decode(np.full((2, 20), np.inf, np.float32))


def test_truncated_onnx_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(Z20, folder)
    onnx_file = folder / "encoder.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:5000])
    with pytest.raises(VaefastError, match="not a loadable ONNX model"):
        runtime.load(folder, providers="cpu")


def test_onnx_of_another_model_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(Z20, folder)
    shutil.copy(Z2 / "decoder.onnx", folder / "decoder.onnx")
    with pytest.raises(VaefastError, match="wrong model file"):
        runtime.load(folder, providers="cpu")
    # same shapes, other weights: caught by the sha256 in the metadata
    meta = json.loads((Z20 / "model.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (folder / "model.json").write_text(json.dumps(meta))
    shutil.copy(Z20 / "decoder.onnx", folder / "decoder.onnx")
    with pytest.raises(VaefastError, match="belongs to another model"):
        runtime.load(folder, providers="cpu")


def test_missing_model_json_is_refused(tmp_path):
    with pytest.raises(VaefastError, match="no model.json"):
        runtime.load(tmp_path, providers="cpu")


def test_gpu_request_without_gpu_is_an_error_not_a_fallback():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA build of onnxruntime is installed")
    with pytest.raises(VaefastError, match="CUDAExecutionProvider is not available"):
        runtime.load(Z20, providers="cuda")
    assert runtime.load(Z20, providers="auto").providers == ["CPUExecutionProvider"]


def test_cuda_matches_cpu_with_io_binding(mnist):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA build of onnxruntime")
    try:
        gpu = runtime.load(Z20, providers="cuda")
    except VaefastError as e:
        pytest.skip(f"no usable GPU: {e}")
    cpu = runtime.load(Z20, providers="cpu")
    np.testing.assert_allclose(
        gpu.encode(mnist.X[:1000])[0], cpu.encode(mnist.X[:1000])[0], atol=1e-4
    )
    np.testing.assert_allclose(gpu.sample(64), cpu.sample(64), atol=1e-4)

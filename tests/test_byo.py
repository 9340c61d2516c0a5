"""Bring your own VAE: a conv + BatchNorm model the tests define themselves, on real colour
images, exports (API and CLI), runs, embeds, plots; and the cases that cannot work fail
in one line, leaving nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import vaefast  # noqa: E402
from tests import byo_vae  # noqa: E402
from tests.helpers import ROOT, embed_killed_midway, run_cli  # noqa: E402
from vaefast import runtime  # noqa: E402
from vaefast.errors import VaefastError  # noqa: E402

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle


@pytest.fixture(scope="module")
def images():
    """600 real 32x32 colour patches, channels-last uint8, and the photo each came from."""
    return byo_vae.colour_patches(600)


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / 255


@pytest.fixture(scope="module")
def trained(images):
    return byo_vae.train_briefly(byo_vae.build_model(), images[0])


@pytest.fixture(scope="module")
def exported(trained, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("byo") / "mine"
    report = vaefast.export_vae(
        trained,
        out,
        example=nchw(images[0][:256]),
        variants=("int8", "int8-static"),
        label_names=["china", "flower"],
    )
    return out, report


def test_export_vae_verifies_a_conv_batchnorm_model(exported):
    out, report = exported
    assert report["fp32"]["max_abs"] <= 1e-5
    # verified at the batch the runtime runs by default, and at 1, 7 (and 256 below it)
    rows = runtime.load(out, providers="cpu").batch_rows
    assert report["fp32"]["runtime_batch_rows"] == rows
    assert set(report["fp32"]["random"]) == {"1", "7", str(rows)} | (
        {"256"} if rows > 256 else set()
    )
    assert report["int8"]["knn10_overlap_vs_fp32"] > 0.5
    meta = json.loads((out / "model.json").read_text())
    assert meta["input_shape"] == [3, 32, 32] and meta["input_layout"] == "NCHW"
    assert meta["image_shape"] == [32, 32, 3] and meta["latent_dim"] == 8
    assert meta["decoder_output"] == "probs" and meta["label_names"] == ["china", "flower"]


def test_static_int8_quantizes_the_convolutions_and_keeps_agreement(exported, images):
    import onnx

    out, report = exported
    static = report["int8-static"]
    assert static["encoder"]["format"] == static["decoder"]["format"] == "QDQ"
    assert static["knn10_overlap_vs_fp32"] > 0.5 and static["recon_psnr_db_vs_fp32"] > 25
    proto = onnx.load(str(out / "encoder.int8-static.onnx"))
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    convolutions = [n for n in proto.graph.node if n.op_type == "Conv"]
    # the convolutions run in int8: their inputs and weights come dequantized, in standard ops
    assert convolutions and all(
        producers.get(n.input[1]) == "DequantizeLinear" for n in convolutions
    )
    assert {n.domain for n in proto.graph.node} == {""}
    vae = runtime.load(out, variant="int8-static", providers="cpu")
    mu, _ = vae.encode(images[0][:16])
    ref, _ = runtime.load(out, providers="cpu").encode(images[0][:16])
    assert np.abs(mu - ref).max() < 0.2 * np.abs(ref).max()


def test_runtime_matches_eager_in_either_channel_layout(exported, trained, images):
    vae = runtime.load(exported[0], providers="cpu")
    X = images[0][:64]
    mu_last, _ = vae.encode(X)  # channels-last uint8, as images are stored
    mu_first, logvar = vae.encode(nchw(X))  # channels-first floats
    np.testing.assert_allclose(mu_last, mu_first, atol=1e-6)
    with torch.no_grad():
        mu_eager, logvar_eager = trained.encode(torch.from_numpy(nchw(X)))
        x_hat_eager = trained.decode(mu_eager).numpy()
    np.testing.assert_allclose(mu_first, mu_eager.numpy(), atol=1e-5)
    np.testing.assert_allclose(logvar, logvar_eager.numpy(), atol=1e-5)
    x_hat = vae.decode(mu_first)
    assert x_hat.shape == (64, 3, 32, 32)
    np.testing.assert_allclose(x_hat, x_hat_eager, atol=1e-5)
    assert vae.images(x_hat).shape == (64, 32, 32, 3) and vae.sample(4).shape == (4, 3, 32, 32)
    with pytest.raises(
        VaefastError,
        match=r"shape \[N, 28, 28\]; this model expects "
        r"\[N, 3, 32, 32\] \(or channels-last",
    ):
        vae.encode(np.zeros((2, 28, 28), np.uint8))


def _saved_weights(model, folder, suffix: str):
    """The model's state dict as users save it: safetensors or ``torch.save``'s .pt."""
    weights = folder / f"w{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), weights)
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(weights))
    return weights


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_users_weights_file_loads_into_their_model_in_eval_mode(trained, tmp_path, suffix):
    """``--module FILE.py:FN --weights W`` as the CLI reads it (``load_module``), from
    either format: every tensor as saved, the model in eval mode."""
    from vaefast.export import load_module

    weights = _saved_weights(trained, tmp_path, suffix)
    model = load_module(f"{ROOT / 'tests/byo_vae.py'}:build_model", weights)
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == trained.state_dict().keys()
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def test_cli_exports_a_model_from_the_users_file(trained, images, tmp_path):
    weights = _saved_weights(trained, tmp_path, ".safetensors")
    np.save(tmp_path / "x.npy", images[0])
    result = run_cli(
        "export",
        "--module",
        "tests/byo_vae.py:build_model",
        "--weights",
        str(weights),
        "--input-shape",
        "3,32,32",
        "--data",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "cli"),
    )
    assert result.returncode == 0, result.stderr
    vae = runtime.load(tmp_path / "cli", providers="cpu")
    with torch.no_grad():
        mu = trained.encode(torch.from_numpy(nchw(images[0][:16])))[0].numpy()
    np.testing.assert_allclose(vae.encode(images[0][:16])[0], mu, atol=1e-5)


@pytest.mark.parametrize("kind", ["normal", "logits", "renamed"])
def test_posterior_normal_logit_decoders_and_renamed_methods_export(images, tmp_path, kind):
    torch.manual_seed(0)
    options = {"normal": dict(posterior="normal"), "logits": dict(logits=True)}.get(kind, {})
    model = (byo_vae.RenamedVAE if kind == "renamed" else byo_vae.ConvBNVAE)(**options).eval()
    x = nchw(images[0][:32])
    calls = dict(encode=model.inference, decode=model.generate) if kind == "renamed" else {}
    report = vaefast.export_vae(
        model,
        tmp_path / kind,
        example=x,
        decoder_output="logits" if kind == "logits" else "probs",
        **calls,
    )
    assert report["fp32"]["max_abs"] <= 1e-5
    vae = runtime.load(tmp_path / kind, providers="cpu")
    with torch.no_grad():
        post = byo_vae.ConvBNVAE.encode(model, torch.from_numpy(x))
        mu, logvar = (post.loc, 2 * torch.log(post.scale)) if kind == "normal" else post
        x_hat = byo_vae.ConvBNVAE.decode(model, mu)
        x_hat = torch.sigmoid(x_hat) if kind == "logits" else x_hat
    got_mu, got_logvar = vae.encode(x)
    np.testing.assert_allclose(got_mu, mu.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_logvar, logvar.numpy(), atol=1e-5)
    decoded = vae.decode(got_mu)
    assert decoded.min() >= 0 and decoded.max() <= 1
    np.testing.assert_allclose(decoded, x_hat.numpy(), atol=1e-5)


def test_a_model_in_training_mode_is_exported_in_eval_mode_and_left_as_it_was(
    trained, images, tmp_path, capsys
):
    trained.train()
    vaefast.export_vae(trained, tmp_path / "t", example=nchw(images[0][:32]))
    assert trained.training and "training mode" in capsys.readouterr().err
    trained.eval()
    meta_mu = runtime.load(tmp_path / "t", providers="cpu").encode(images[0][:8])[0]
    with torch.no_grad():  # BatchNorm used its running statistics, not the batch's
        np.testing.assert_allclose(
            meta_mu, trained.encode(torch.from_numpy(nchw(images[0][:8])))[0].numpy(), atol=1e-5
        )


class _SingleTensor(byo_vae.ConvBNVAE):
    def encode(self, x):
        return super().encode(x)[0]


class _FlatDecoder(byo_vae.ConvBNVAE):
    def decode(self, z):
        return super().decode(z)[:, :, :16]


@pytest.mark.parametrize(
    "model_class, message",
    [
        (
            byo_vae.RandomEncoderVAE,
            "encode is random.*reparameterization .sampling z. must stay out of encode",
        ),
        (
            _SingleTensor,
            "encode must return .mu, logvar. tensors, a torch.distributions.Normal, or an "
            "object with .mean and .logvar.*got Tensor",
        ),
        (_FlatDecoder, r"decode returned shape \[32, 3, 16, 32\]; expected \[32, 3, 32, 32\]"),
        (
            byo_vae.UnexportableVAE,
            r"the ONNX exporter cannot handle op aten.special_zeta \(prims.zeta\) in encode",
        ),
    ],
)
def test_models_that_cannot_work_fail_in_one_line_leaving_nothing(
    images, tmp_path, model_class, message
):
    torch.manual_seed(0)
    with pytest.raises(VaefastError, match=message) as info:
        vaefast.export_vae(model_class().eval(), tmp_path / "bad", example=nchw(images[0][:32]))
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_probabilities_outside_unit_range_ask_for_logits(images, tmp_path):
    model = byo_vae.ConvBNVAE(logits=True).eval()
    with pytest.raises(VaefastError, match="decoder_output='logits'"):
        vaefast.export_vae(model, tmp_path / "bad", example=nchw(images[0][:32]))
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def colour_npy(images, tmp_path_factory):
    """40,000 channels-last colour patches with noise (123 MB) as one .npy."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("colour") / "patches.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(40_000, 32, 32, 3))
    for start in range(0, len(X), 5000):
        pick = images[0][rng.integers(0, len(images[0]), 5000)].astype(np.int16)
        X[start : start + 5000] = np.clip(pick + rng.integers(-10, 11, pick.shape), 0, 255)
    X.flush()
    return path


def test_embed_of_image_shaped_npy_resumes_after_sigkill_identically(
    exported, colour_npy, tmp_path
):
    from vaefast.embedding.store import open_embeddings

    reference = runtime.load(exported[0], providers="cpu").encode(
        np.load(colour_npy, mmap_mode="r")
    )[0]
    out = tmp_path / "k.zarr"
    args = [
        str(exported[0]),
        str(colour_npy),
        "--out",
        str(out),
        "--chunk-rows",
        "500",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--quiet",
    ]
    embed_killed_midway(args, out)
    result = run_cli("embed", *args)
    assert result.returncode == 0, result.stderr
    assert "(0 chunks resumed)" not in result.stdout
    np.testing.assert_array_equal(open_embeddings(out)["mu"][:], reference)


def test_plot_all_draws_rgb_views_without_torch(exported, images, tmp_path):
    np.savez(tmp_path / "x.npz", X=images[0][:300], y=images[1][:300])
    code = (
        "import sys, matplotlib; matplotlib.use('Agg'); from vaefast.plot import render; "
        f"w = render('all', {str(exported[0])!r}, {str(tmp_path / 'p')!r}, "
        f"data={str(tmp_path / 'x.npz')!r}, thumbnails=10); "
        "print(len(w), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8", "False"]

    import matplotlib

    matplotlib.use("Agg")
    from vaefast import plot

    vae = runtime.load(exported[0], providers="cpu")
    lat = plot.Latents.from_data(vae, images[0][:200], images[1][:200])
    fig = plot.latent(lat, thumbnails=5)
    thumbs = [a for a in fig.axes[0].artists if a.get_gid() == "thumbnail"]
    assert len(thumbs) == 5 and all(t.offsetbox.get_data().shape == (32, 32, 3) for t in thumbs)

"""Latent-diffusion autoencoders and VAEs as people write them: diffusers' AutoencoderKL
(spatial latents, [-1, 1] pixels, output objects, any image size) and a Tanh conv VAE
that returns a list, exported with no wrapper code, then run, embedded and plotted
without torch; and the inputs that cannot work, refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import vaefast  # noqa: E402
from tests import byo_vae  # noqa: E402
from tests.helpers import EXPORTED, ROOT, embed_killed_midway, run_cli, xarray_dataset  # noqa: E402
from vaefast import runtime  # noqa: E402
from vaefast.errors import VaefastError  # noqa: E402

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / 255


@pytest.fixture(scope="module")
def photos():
    """Real 32x32 colour patches (channels-last uint8) and the photo each came from."""
    return byo_vae.colour_patches(400, side=32)


@pytest.fixture(scope="module")
def kl_vae(photos):
    """A small AutoencoderKL trained briefly on the photo patches: weights that mean
    something, so that quantized variants' agreement is a real figure (30 steps: int8-static
    reconstructions at 43 dB PSNR to fp32 and kNN@10 overlap 0.99; 60 steps: 42 dB, 1.0)."""
    return byo_vae.train_kl_briefly(byo_vae.small_autoencoder_kl(), photos[0][:256], steps=30)


@pytest.fixture(scope="module")
def kl_export(kl_vae, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("kl") / "exported"
    report = vaefast.export_vae(
        kl_vae, out, example=nchw(photos[0][:16]), variants=("int8-static",)
    )
    return out, report


@pytest.fixture(scope="module")
def kl_folder(kl_vae, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kl-folder") / "vae"
    kl_vae.save_pretrained(str(folder))
    return folder


def eager_posterior(model, images01: np.ndarray):
    with torch.no_grad():
        dist = model.encode(torch.from_numpy(images01 * 2 - 1)).latent_dist
        return dist.mean.numpy(), dist.logvar.numpy()


def eager_decode01(model, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        sample = model.decode(torch.from_numpy(z)).sample.numpy()
    return np.clip((sample + 1) / 2, 0, 1)


def test_autoencoder_kl_exports_from_its_object(kl_export, kl_vae):
    out, report = kl_export
    assert report["fp32"]["max_abs"] <= report["tolerance"] == 1e-4  # 1,024 latent values
    assert report["fp32"]["second_size"]["size"] == [34, 36]
    meta = json.loads((out / "model.json").read_text())
    assert meta["latent_shape"] == [4, 16, 16] and meta["input_shape"] == [3, 32, 32]
    assert meta["input_range"] == [-1.0, 1.0] and meta["output_range"] == [-1.0, 1.0]
    assert meta["size"]["dynamic"] and meta["size"]["multiple"] == 2
    assert meta["latent_scaling"]["scaling_factor"] == kl_vae.config.scaling_factor
    assert meta["architecture"]["diffusers"] == "AutoencoderKL"


def test_static_int8_and_openvino_agree_with_fp32_where_the_weights_mean_something(kl_export):
    """Agreement of int8-static and OpenVINO with fp32 on the briefly trained model (the
    export report's figures): reconstructions within 30 dB PSNR, OpenVINO's μ within 5%."""
    report = kl_export[1]
    assert report["int8-static"]["recon_psnr_db_vs_fp32"] >= 30, report["int8-static"]
    if "openvino" in report:
        assert report["openvino"]["recon_psnr_db_vs_fp32"] >= 30, report["openvino"]
        assert report["openvino"]["mu_rel_error"] <= 5e-2, report["openvino"]


def test_runtime_matches_diffusers_at_any_allowed_size(kl_export, kl_vae, photos):
    vae = runtime.load(kl_export[0], providers="cpu")
    X = photos[0][:12]
    mu, logvar = vae.encode(X)  # channels-last uint8, mapped to [-1, 1] by the runtime
    mu_eager, logvar_eager = eager_posterior(kl_vae, nchw(X))
    assert mu.shape == (12, 4, 16, 16)
    np.testing.assert_allclose(mu, mu_eager, atol=1e-4)
    np.testing.assert_allclose(logvar, logvar_eager, atol=1e-4)
    np.testing.assert_allclose(vae.decode(mu), eager_decode01(kl_vae, mu), atol=1e-4)
    assert vae.sample(3).shape == (3, 3, 32, 32)

    big = byo_vae.colour_patches(4, side=48)[0][:, :, :40]  # 48 x 40: another size
    mu_big, _ = vae.encode(big)
    assert mu_big.shape == (4, 4, 24, 20)
    np.testing.assert_allclose(mu_big, eager_posterior(kl_vae, nchw(big))[0], atol=1e-4)
    decoded = vae.decode(mu_big)
    assert decoded.shape == (4, 3, 48, 40) and vae.images(decoded).shape == (4, 48, 40, 3)
    np.testing.assert_allclose(decoded, eager_decode01(kl_vae, mu_big), atol=1e-4)
    with pytest.raises(
        VaefastError,
        match=r"inputs are 33x32 images; this model takes "
        r"heights and widths that are multiples of 2",
    ):
        vae.encode(np.zeros((1, 33, 32, 3), np.uint8))


# the CLI's `export --diffusers` of a saved folder: tests/test_readme.py runs the README's example


def _no_config(folder):
    (folder / "config.json").unlink()


def _pickled_weights(folder):
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "diffusion_pytorch_model.bin")


def _another_class(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"_class_name": "UNet2DModel"}))


def _tiny_autoencoder(folder):
    """A real AutoencoderTiny (TAESD) saved where the AutoencoderKL was."""
    import shutil

    from diffusers import AutoencoderTiny

    shutil.rmtree(folder)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=2,
    ).save_pretrained(str(folder))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_no_config, "no config.json"),
        (
            _pickled_weights,
            r"no diffusion_pytorch_model.safetensors \(diffusion_pytorch_model.bin "
            r"is a pickle, which vaefast never loads\)",
        ),
        (_another_class, "config.json describes UNet2DModel, not an AutoencoderKL"),
        (_tiny_autoencoder, "no posterior, so sigma is undefined"),
    ],
)
def test_bad_diffusers_folders_fail_in_one_line(kl_folder, tmp_path, spoil, message):
    import shutil

    folder = tmp_path / "vae"
    shutil.copytree(kl_folder, folder)
    spoil(folder)
    result = run_cli("export", "--diffusers", str(folder), "--out", str(tmp_path / "e"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr or __import__("re").search(message, result.stderr)
    assert not (tmp_path / "e").exists()


def test_a_step_over_the_memory_budget_fails_in_one_line(kl_folder, tmp_path):
    """A budget below what one row needs: one line naming the step, its need and the
    budget, exit 2, nothing left behind — never a kernel kill."""
    import re

    result = run_cli(
        "export",
        "--diffusers",
        str(kl_folder),
        "--out",
        str(tmp_path / "e"),
        "--memory-budget",
        "200M",
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert re.search(
        r"verification needs [\d,]+ MB at batch 1, over the memory budget of "
        r"200 MB",
        result.stderr,
    ), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_report_gives_each_steps_batch_and_peak_memory(kl_export):
    report = json.loads((kl_export[0] / "export_report.json").read_text())
    steps = report["memory"]["steps"]
    assert report["memory"]["budget_mb"] == 4096
    assert {"eager verify", "onnx verify"} <= set(steps)
    assert all(s["batch"] >= 1 and 0 < s["peak_rss_mb"] <= 4096 for s in steps.values())


@pytest.fixture(scope="module")
def photos_npy(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "photos.npy"
    np.save(path, photos[0])
    return path


def test_embed_stores_spatial_latents_in_float16_and_plots_without_torch(
    kl_export, photos, photos_npy, tmp_path
):
    import zarr

    store = tmp_path / "kl.zarr"
    result = run_cli(
        "embed",
        str(kl_export[0]),
        str(photos_npy),
        "--out",
        str(store),
        "--dtype",
        "float16",
        "--tsne",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    group = zarr.open_group(str(store), mode="r")
    mu = group["mu"]
    assert mu.shape == (400, 4, 16, 16) and mu.dtype == np.float16
    assert mu.chunks[1:] == (4, 16, 16) and group["tsne"].shape == (400, 2)
    assert group["mu"].compressors  # compressed chunks
    ds = xarray_dataset(store)
    assert ds.mu.dims == ("row", "channel", "height", "width") and ds.mu.dtype == np.float16
    reference = runtime.load(kl_export[0], providers="cpu").encode(photos[0])[0]
    np.testing.assert_allclose(mu[:].astype(np.float32), reference, rtol=1e-3, atol=1e-3)

    code = (
        "import sys, matplotlib; matplotlib.use('Agg'); from vaefast.plot import render; "
        f"w = render('all', {str(kl_export[0])!r}, {str(tmp_path / 'p')!r}, "
        f"embeddings={str(store)!r}); print(len(w), 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8", "False"]
    _explorer_shows_spatial_latents(kl_export[0], store, photos[0])


def _explorer_shows_spatial_latents(model, store, images) -> None:
    """The explorer on a spatial float16 store: colour input images as stored, σ maps
    (mean σ over channels per latent pixel), decodes in colour."""
    import io

    from PIL import Image
    from starlette.testclient import TestClient

    from vaefast.explore import app
    from vaefast.explore.columns import Columns

    vae = runtime.load(model, providers="cpu")
    ex = app.Explorer(vae, Columns(store, vae.meta["weights_sha256"], str(model)))
    try:
        with TestClient(app.build(ex), base_url="http://127.0.0.1") as c:
            meta = c.get("/api/meta").json()
            assert meta["spatial"] and meta["latent_shape"] == [4, 16, 16] and meta["z"] == 1024

            def png(path):
                return np.asarray(Image.open(io.BytesIO(c.get(path).content)))

            np.testing.assert_array_equal(png("/api/rows/9/input.png"), images[9])
            info = c.get("/api/rows/9").json()
            sigma = np.float32(info["sigma"]).reshape(4, 16, 16).mean(axis=0)
            expected = (np.clip(sigma / sigma.max(), 0, 1) * 255 + 0.5).astype(np.uint8)
            np.testing.assert_array_equal(png("/api/rows/9/sigma.png"), expected)
            assert png("/api/rows/9/samples.png?n=4").shape == (32, 4 * 32, 3)
            assert png("/api/rows/9/reconstruction.png").shape == (32, 32, 3)
    finally:
        ex.decoder.close()


def test_spatial_views_draw_sigma_maps_channels_and_the_scaling_factor(kl_export, photos):
    import matplotlib

    matplotlib.use("Agg")
    from vaefast import plot

    vae = runtime.load(kl_export[0], providers="cpu")
    lat = plot.Latents.from_data(vae, photos[0][:60], photos[1][:60])
    fig = plot.uncertainty(lat, method="pca", examples=4)
    maps = [im for ax in fig.axes for im in ax.get_images() if im.get_gid() == "sigma-map"]
    assert len(maps) == 8 and maps[0].get_array().shape == (16, 16)
    assert "4×16×16 = 1024-D (flattened)" in fig.axes[0].get_title()
    fig = plot.channels(lat)
    assert len(fig.axes) == 4 * 5 + 1  # 4 inputs x (image + 4 channels) + colour bar
    fig = plot.diagnostics(lat)
    bars = [p.get_height() for p in fig.axes[2].patches]
    assert bars == pytest.approx([plot.unit_variance_scale(lat), 0.18215])
    sigma2 = np.exp(lat.logvar)
    expected = 1 / np.sqrt(lat.mu.var(dtype=np.float64) + sigma2.mean(dtype=np.float64))
    assert plot.unit_variance_scale(lat) == pytest.approx(expected)


def test_embed_of_spatial_latents_resumes_after_sigkill_identically(kl_export, photos, tmp_path):
    rng = np.random.default_rng(0)
    X = photos[0][rng.integers(0, 400, 3000)]
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "k.zarr"
    args = [
        str(kl_export[0]),
        str(tmp_path / "x.npy"),
        "--out",
        str(out),
        "--chunk-rows",
        "100",
        "--threads",
        "1",
        "--quiet",
    ]
    embed_killed_midway(args, out)
    result = run_cli("embed", *args)
    assert result.returncode == 0, result.stderr
    assert "(0 chunks resumed)" not in result.stdout
    from vaefast.embedding.store import open_embeddings

    reference = runtime.load(kl_export[0], providers="cpu", threads=1).encode(X, batch_size=64)[0]
    np.testing.assert_allclose(open_embeddings(out)["mu"][:], reference, atol=1e-5)


# --- the Tanh VAE -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces():
    """Real 64x64 colour patches, channels-last uint8 (standing in for CelebA crops)."""
    return byo_vae.colour_patches(200, side=64, seed=1)[0]


@pytest.fixture(scope="module")
def tanh_vae(faces):
    return byo_vae.train_tanh_briefly(byo_vae.TanhVAE(), faces)


def test_tanh_vae_exports_with_its_ranges_and_stays_fixed_size(tanh_vae, faces, tmp_path):
    report = vaefast.export_vae(
        tanh_vae,
        tmp_path / "t",
        example=nchw(faces[:64]),
        input_range=(-1, 1),
        output_range=(-1, 1),
    )
    assert report["fp32"]["max_abs"] <= 1e-5
    meta = json.loads((tmp_path / "t" / "model.json").read_text())
    assert meta["latent_shape"] == [16] and not meta["size"]["dynamic"]
    assert "flat latents" in meta["size"]["note"]
    vae = runtime.load(tmp_path / "t", providers="cpu")
    mu, logvar = vae.encode(faces[:20])
    with torch.no_grad():
        x = torch.from_numpy(nchw(faces[:20]) * 2 - 1)
        mu_eager, logvar_eager = tanh_vae.encode(x)
        decoded_eager = (tanh_vae.decode(mu_eager).numpy() + 1) / 2
    np.testing.assert_allclose(mu, mu_eager.numpy(), atol=1e-5)
    np.testing.assert_allclose(logvar, logvar_eager.numpy(), atol=1e-5)
    np.testing.assert_allclose(vae.decode(mu), decoded_eager, atol=1e-5)
    with pytest.raises(
        VaefastError,
        match=r"shape \[N, 32, 32, 3\]; this model expects "
        r"\[N, 3, 64, 64\]",
    ):
        vae.encode(np.zeros((1, 32, 32, 3), np.uint8))


def test_a_tanh_decoder_without_its_range_is_refused_naming_the_options(tanh_vae, faces, tmp_path):
    with pytest.raises(
        VaefastError,
        match=r"outside output_range \(0, 1\); pass "
        r"output_range=\(lo, hi\).*decoder_output='logits'",
    ):
        vaefast.export_vae(tanh_vae, tmp_path / "t", example=nchw(faces[:16]), input_range=(-1, 1))
    assert not (tmp_path / "t").exists()


class _MismatchedLogvar(byo_vae.ConvBNVAE):
    def encode(self, x):
        mu, logvar = super().encode(x)
        return mu, logvar[:, :4]


class _DictDecoder(byo_vae.ConvBNVAE):
    def decode(self, z):
        return {"image": super().decode(z)}


@pytest.mark.parametrize(
    "model_class, options, message",
    [
        (
            _MismatchedLogvar,
            {},
            r"encode returned mu of shape \[16, 8\] and logvar of shape "
            r"\[16, 4\]; they must have the same shape",
        ),
        (
            _DictDecoder,
            {},
            "decode must return a tensor or an object with a .sample tensor, got dict",
        ),
        (
            byo_vae.ConvBNVAE,
            {"output_range": (1, -1)},
            r"output_range \(1, -1\): lo must be "
            "below hi",
        ),
        (
            byo_vae.ConvBNVAE,
            {"example": np.full((4, 3, 32, 32), 2.0, np.float32)},
            r"example: values span \[2.0, 2.0\]",
        ),
    ],
)
def test_what_cannot_work_fails_in_one_line_leaving_nothing(
    photos, tmp_path, model_class, options, message
):
    torch.manual_seed(0)
    options = {"example": nchw(photos[0][:16])} | options
    with pytest.raises(VaefastError, match=message) as info:
        vaefast.export_vae(model_class().eval(), tmp_path / "bad", **options)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_output_range_must_rise(tmp_path):
    result = run_cli(
        "export",
        "--module",
        "tests/byo_vae.py:build_model",
        "--input-shape",
        "3,32,32",
        "--output-range",
        "1,-1",
        "--out",
        str(tmp_path / "e"),
    )
    assert (
        result.returncode == 2
        and "--output-range (1, -1): lo must be below hi" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("bad, reason", [(np.nan, "NaN or inf"), (3.0, "values outside")])
def test_embed_names_the_bad_row_and_leaves_no_store(tmp_path, bad, reason):
    X = np.random.default_rng(0).random((5000, 784), dtype=np.float32)
    X[4321, 17] = bad
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "e.zarr"
    result = run_cli(
        "embed",
        str(EXPORTED / "mnist5k-z20"),
        str(tmp_path / "x.npy"),
        "--out",
        str(out),
        "--chunk-rows",
        "1000",
        "--quiet",
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{reason}" in result.stderr and "at row 4321" in result.stderr
    assert not out.exists()


def test_dask_embed_of_spatial_latents_equals_the_single_process_path(
    kl_export, photos_npy, tmp_path
):
    pytest.importorskip("distributed")
    from vaefast.embedding.pipeline import embed
    from vaefast.embedding.store import open_embeddings

    for name, options in (("serial", {}), ("dask", {"scheduler": "local", "workers": 2})):
        embed(
            kl_export[0],
            str(photos_npy),
            tmp_path / f"{name}.zarr",
            chunk_rows=100,
            dtype="float16",
            progress=False,
            **options,
        )
    a, b = open_embeddings(tmp_path / "serial.zarr"), open_embeddings(tmp_path / "dask.zarr")
    assert a["mu"].shape == (400, 4, 16, 16) and a["mu"].dtype == np.float16
    np.testing.assert_array_equal(a["mu"][:], b["mu"][:])
    np.testing.assert_array_equal(a["logvar"][:], b["logvar"][:])

"""Training faithful to the PyTorch example: real short runs, determinism, run folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaefast.errors import VaefastError
from vaefast.models.train import load_run, train


def test_short_run_writes_a_complete_run_folder(short_run):
    names = {p.name for p in short_run.iterdir()}
    assert names == {"model.safetensors", "config.json", "reconstruction.png", "samples.png"}
    config = json.loads((short_run / "config.json").read_text())
    assert config["model"] == {
        "arch": "mlp",
        "input_shape": [784],
        "hidden_dim": 400,
        "latent_dim": 20,
    }
    assert config["data"] == "mnist5k" and config["seed"] == 1
    assert "torch" in config["versions"]
    losses = [h["test_loss"] for h in config["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert all(h["train_loss"] > 0 for h in config["history"])


def test_pngs_are_grids_like_the_example(short_run):
    from PIL import Image

    recon = np.asarray(Image.open(short_run / "reconstruction.png"))
    samples = np.asarray(Image.open(short_run / "samples.png"))
    assert recon.shape == (2 + 2 * 30, 2 + 8 * 30)  # 8 originals over 8 reconstructions
    assert samples.shape == (2 + 8 * 30, 2 + 8 * 30)  # 64 samples, 8x8
    assert samples.std() > 10


def test_load_run_restores_the_model(short_run):
    import torch

    model, config = load_run(short_run)
    assert model.latent_dim == 20 and not model.training
    with torch.no_grad():
        mu, logvar = model.encode(torch.zeros(3, 784))
    assert mu.shape == (3, 20) and torch.isfinite(logvar).all()


def test_same_seed_gives_identical_weights(tmp_path):
    from safetensors.numpy import load_file

    for name in ("a", "b"):
        train("digits", tmp_path / name, epochs=1, latent_dim=2, hidden_dim=32, progress=False)
    a, b = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert all(np.array_equal(a[k], b[k]) for k in a)
    train("digits", tmp_path / "c", epochs=1, latent_dim=2, hidden_dim=32, seed=2, progress=False)
    c = load_file(tmp_path / "c" / "model.safetensors")
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def test_sizes_are_configurable(tmp_path):
    train("digits", tmp_path / "r", epochs=1, latent_dim=3, hidden_dim=16, progress=False)
    model, config = load_run(tmp_path / "r")
    assert (model.input_dim, model.hidden_dim, model.latent_dim) == (64, 16, 3)
    assert config["image_shape"] == [8, 8]


def test_latent_size_below_one_is_refused(tmp_path):
    with pytest.raises(VaefastError, match="latent size must be >= 1"):
        train("digits", tmp_path / "r", latent_dim=0, progress=False)
    assert not (tmp_path / "r").exists()


def test_existing_output_is_refused_and_kept(short_run):
    before = (short_run / "config.json").read_bytes()
    with pytest.raises(VaefastError, match="already exists"):
        train("digits", short_run, epochs=1, progress=False)
    assert (short_run / "config.json").read_bytes() == before


def test_corrupt_weights_are_refused(short_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(short_run, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(VaefastError, match="corrupt weights"):
        load_run(bad)
    with pytest.raises(VaefastError, match="not found"):
        load_run(tmp_path / "missing")


def test_failed_training_leaves_nothing(tmp_path):
    with pytest.raises(VaefastError):
        train("npy:/no/such.npy", tmp_path / "r", progress=False)
    assert list(tmp_path.iterdir()) == []

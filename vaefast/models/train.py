"""Training loop and run folders: model.safetensors + config.json + two PNGs.

Faithful to the official PyTorch VAE example: Adam lr 1e-3, batch 128, 10 epochs,
seed 1, loss = BCE(sum) + KLD, reported per sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vaefast import data as data_mod
from vaefast.models.architectures import architecture
from vaefast.atomic import atomic_dir, read_json, write_json
from vaefast.errors import VaefastError
from vaefast.images import save_grid
from vaefast.layout import arrange, to_display
from vaefast.versions import package_versions

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def train(
    data: str = "mnist5k",
    out: str | os.PathLike = "runs/default",
    *,
    arch: str = "mlp",
    latent_dim: int = 20,
    hidden_dim: int = 400,
    epochs: int = 10,
    seed: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    force: bool = False,
    progress: bool = True,
    max_train: int | None = None,
) -> dict[str, Any]:
    """Train a VAE on a data spec and write a run folder at ``out``; return its config.

    The folder is built in a temporary sibling and renamed on success, so a failed or
    interrupted run leaves nothing at ``out``. ``max_train`` caps the training rows
    (for quick runs and tests). ``arch`` names an entry of
    ``vaefast.models.architectures.ARCHITECTURES`` (``mlp``: the official example; ``conv``: a small
    convolutional VAE for image data). Deterministic on CPU for a given seed and
    thread count.
    """
    for name, value in (
        ("latent size", latent_dim),
        ("hidden size", hidden_dim),
        ("epochs", epochs),
        ("batch size", batch_size),
    ):
        if value < 1:
            raise VaefastError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise VaefastError(f"learning rate must be > 0, got {lr}")
    out = Path(out)
    if out.exists() and not force:
        raise VaefastError(f"output {out} already exists; choose another --out or pass --force")
    data_mod.parse_spec(data)  # an unknown kind of spec: refused before torch loads
    entry = architecture(arch)  # an unknown name: refused before the data is read
    ds = data_mod.load(data)
    input_shape = entry.input_shape(ds.n_features, ds.image_shape)  # data it cannot take
    X_train, y_train = ds.X_train, ds.y_train
    if max_train is not None:
        X_train = X_train[:max_train]
        y_train = None if y_train is None else y_train[:max_train]

    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from vaefast.models.modules import build

    sizes = {
        "arch": arch,
        "input_shape": list(input_shape),
        "hidden_dim": hidden_dim,
        "latent_dim": latent_dim,
    }
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    layout = (input_shape, ds.image_shape)
    xtr = torch.from_numpy(np.ascontiguousarray(arrange(X_train, *layout)))
    xte = torch.from_numpy(np.ascontiguousarray(arrange(ds.X_test, *layout)))
    history = []
    for epoch in range(1, epochs + 1):
        bar = tqdm(
            range(0, len(xtr), batch_size),
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            disable=not progress,
            leave=True,
        )
        total = _epoch(model, optimizer, xtr, batch_size, gen, bar)
        test_loss = evaluate(model, xte, batch_size, gen)
        history.append({"epoch": epoch, "train_loss": total / len(xtr), "test_loss": test_loss})
        if progress:
            bar.write(
                f"epoch {epoch}: train loss {total / len(xtr):.4f}, "
                f"test loss {test_loss:.4f} per sample"
            )

    config = {
        "model": sizes,
        "image_shape": list(ds.image_shape) if ds.image_shape else None,
        "label_names": ds.label_names,
        "pixel_scale": ds.scale,
        "data": data,
        "n_train": int(len(xtr)),
        "n_test": int(len(xte)),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "history": history,
        "versions": package_versions("torch", "numpy", "safetensors"),
    }
    with atomic_dir(out, force=force) as tmp:
        save_file(model.state_dict(), str(tmp / WEIGHTS))
        write_json(tmp / CONFIG, config)
        _write_pngs(model, xte, ds.image_shape, latent_dim, tmp, gen)
    return config


def _epoch(model, optimizer, xtr, batch_size: int, gen, bar) -> float:
    """One pass over the training rows in a seeded order, ``batch_size`` at a time
    (``bar`` iterates the batch starts); returns the summed loss."""
    import torch

    from vaefast.models.modules import loss_function

    model.train()
    perm = torch.randperm(len(xtr), generator=gen)
    total = 0.0
    for done, start in enumerate(bar, 1):
        batch = xtr[perm[start : start + batch_size]]
        optimizer.zero_grad()
        recon, mu, logvar = model(batch, gen)
        loss = loss_function(recon, batch, mu, logvar)
        loss.backward()
        optimizer.step()
        total += loss.item()
        bar.set_postfix(loss=f"{total / min(done * batch_size, len(xtr)):.2f}")
    return total


def evaluate(model, x, batch_size: int, generator) -> float:
    """Mean per-sample loss on ``x`` (sampling z, as the example's test pass does)."""
    import torch

    from vaefast.models.modules import loss_function

    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            recon, mu, logvar = model(batch, generator)
            total += loss_function(recon, batch, mu, logvar).item()
    return total / len(x)


def _write_pngs(model, x_test, image_shape, latent_dim: int, folder: Path, generator) -> None:
    import torch

    model.eval()
    shape = model.input_shape
    with torch.no_grad():
        x = x_test[:8]
        recon, _, _ = model(x, generator)
        pair = np.concatenate([x.numpy(), recon.numpy().reshape(x.shape)])
        save_grid(folder / "reconstruction.png", to_display(pair, shape, image_shape), nrow=len(x))
        z = torch.randn(64, latent_dim, generator=generator)
        save_grid(
            folder / "samples.png", to_display(model.decode(z).numpy(), shape, image_shape), 8
        )


def load_run(path: str | os.PathLike):
    """Restore a trained VAE from a run folder; return (model in eval mode, config)."""
    path = Path(path)
    if not path.is_dir():
        raise VaefastError(f"run folder {path} not found; train one with `vaefast train`")
    config = read_json(path / CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise VaefastError(f"{path / CONFIG}: no model sizes; is this a vaefast run?")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vaefast.models.modules import build

    model = build(config["model"])
    weights = path / WEIGHTS
    if not weights.is_file():
        raise VaefastError(f"{weights} not found; the run folder is incomplete, train again")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise VaefastError(f"{weights}: corrupt weights ({e}); train again") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        raise VaefastError(
            f"{weights}: tensors {got} do not match the config's model {config['model']}"
        )
    model.load_state_dict(state)
    model.eval()
    return model, config

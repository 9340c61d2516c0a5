"""VAE architectures (torch) and the loss.

``build(config)`` makes the model a run's ``config.json`` describes, for training,
``load_run`` and export alike, through the registry ``vaefast.models.architectures.ARCHITECTURES``
(torch-free; each entry names its class here). Every architecture has
``encode(x) -> (mu, logvar)``, ``decode(z) -> x_hat`` in [0, 1], ``reparameterize`` and
``forward``, an ``input_shape`` (the sample shape it takes) and ``from_sizes(config)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaefast.models.architectures import architecture, check_conv_sides
from vaefast.errors import VaefastError


class _VAE(nn.Module):
    """What every architecture shares: the reparameterization and the forward pass."""

    input_shape: tuple[int, ...]
    latent_dim: int

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(std.shape, generator=generator, dtype=std.dtype, device=std.device)
        return mu + eps * std

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x.view(-1, *self.input_shape))
        z = self.reparameterize(mu, logvar, generator)
        return self.decode(z), mu, logvar


class VAE(_VAE):
    """The official PyTorch example (vae/main.py): fc1 D->H, fc21/fc22 H->Z (mu, log
    sigma^2), fc3 Z->H, fc4 H->D; ReLU, sigmoid output."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 400, latent_dim: int = 20):
        super().__init__()
        self.input_dim, self.hidden_dim, self.latent_dim = input_dim, hidden_dim, latent_dim
        self.input_shape = (input_dim,)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    @classmethod
    def from_sizes(cls, sizes: dict[str, Any]) -> VAE:
        """From a config's ``model`` entry (``input_dim``, or the ``input_shape`` flattened)."""
        input_dim = (
            int(sizes["input_dim"])
            if "input_dim" in sizes
            else math.prod(int(s) for s in sizes["input_shape"])
        )
        return cls(input_dim, int(sizes["hidden_dim"]), int(sizes["latent_dim"]))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))


class ConvVAE(_VAE):
    """A small convolutional VAE for [C, H, W] images with H and W divisible by 4
    (28x28 grey, 32x32 colour): two stride-2 4x4 convs (32, 64 channels) and a hidden
    fc layer down to mu and log sigma^2, the mirror image up with transposed convs;
    ReLU, sigmoid output, no normalization layers (so train and eval agree)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        hidden_dim: int = 256,
        latent_dim: int = 16,
    ):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        check_conv_sides(h, w)
        self.input_shape, self.hidden_dim, self.latent_dim = (c, h, w), hidden_dim, latent_dim
        self.feature_shape = (64, h // 4, w // 4)
        flat = 64 * (h // 4) * (w // 4)
        self.enc = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, hidden_dim),
            nn.ReLU(),
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.dec_fc = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, flat), nn.ReLU()
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, c, 4, 2, 1)
        )

    @classmethod
    def from_sizes(cls, sizes: dict[str, Any]) -> ConvVAE:
        """From a config's ``model`` entry (``input_shape`` [C, H, W])."""
        return cls(tuple(sizes["input_shape"]), int(sizes["hidden_dim"]), int(sizes["latent_dim"]))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dec_fc(z).view(-1, *self.feature_shape)
        return torch.sigmoid(self.dec(h))


def build(sizes: dict[str, Any]) -> _VAE:
    """The untrained model a config's ``model`` entry describes (``arch`` defaults to
    mlp, as in runs written before architectures existed)."""
    arch = sizes.get("arch", "mlp")
    model_class = globals()[architecture(arch).model_class]
    try:
        return model_class.from_sizes(sizes)
    except (KeyError, TypeError, ValueError) as e:
        raise VaefastError(f"model config {sizes} does not describe a {arch} VAE ({e})") from None


def loss_function(
    recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """Reconstruction + KL divergence, summed over the batch (Kingma & Welling, appendix B)."""
    bce = F.binary_cross_entropy(
        recon_x.reshape(len(recon_x), -1), x.reshape(len(recon_x), -1), reduction="sum"
    )
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld

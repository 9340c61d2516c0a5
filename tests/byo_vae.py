"""A VAE of the tests' own (not one of vaefast's): conv + BatchNorm on [N, 3, 32, 32].

It stands for a user's model: its own layer names, BatchNorm, and variants that return a
Normal, decode to logits, or name their methods differently.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNVAE(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        side: int = 32,
        latent: int = 8,
        posterior: str = "tuple",
        logits: bool = False,
    ):
        super().__init__()
        self.posterior, self.logits, self.side = posterior, logits, side
        flat = 32 * (side // 4) ** 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.to_mu = nn.Linear(flat, latent)
        self.to_logvar = nn.Linear(flat, latent)
        self.expand = nn.Sequential(nn.Linear(latent, flat), nn.ReLU())
        self.pixels = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.ConvTranspose2d(16, channels, 4, 2, 1),
        )

    def encode(self, x):
        h = self.features(x)
        mu, logvar = self.to_mu(h), self.to_logvar(h)
        if self.posterior == "normal":
            return torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        return mu, logvar

    def decode(self, z):
        h = self.expand(z).view(-1, 32, self.side // 4, self.side // 4)
        out = self.pixels(h)
        return out if self.logits else torch.sigmoid(out)

    def forward(self, x):
        mu, logvar = self.encode(x) if self.posterior == "tuple" else (None, None)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


class RenamedVAE(ConvBNVAE):
    """Same model, methods named as some codebases name them."""

    def inference(self, x):
        return ConvBNVAE.encode(self, x)

    def generate(self, z):
        return ConvBNVAE.decode(self, z)

    encode = None  # type: ignore[assignment]
    decode = None  # type: ignore[assignment]


class RandomEncoderVAE(ConvBNVAE):
    """Samples inside encode: the mistake export must refuse."""

    def encode(self, x):
        mu, logvar = super().encode(x)
        return mu + torch.randn_like(mu), logvar


class UnexportableVAE(ConvBNVAE):
    """Uses an op the ONNX exporter has no translation for."""

    def encode(self, x):
        mu, logvar = super().encode(x)
        return torch.special.zeta(mu.abs() + 2.0, torch.ones_like(mu)), logvar


def build_model() -> ConvBNVAE:
    """The entry point `vaefast export --module tests/byo_vae.py:build_model` calls."""
    torch.manual_seed(0)
    return ConvBNVAE()


def colour_patches(n: int = 600, side: int = 32, seed: int = 0):
    """Real colour images: [n, side, side, 3] uint8 patches cut from scikit-learn's two
    sample photographs (shipped with scikit-learn, no download)."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side, 3), np.uint8)
    for k in range(n):
        photo = photos[k % len(photos)]
        r = rng.integers(0, photo.shape[0] - side)
        c = rng.integers(0, photo.shape[1] - side)
        out[k] = photo[r : r + side, c : c + side]
    return out, (np.arange(n) % len(photos)).astype(np.int64)


def train_briefly(model: ConvBNVAE, images, steps: int = 30, seed: int = 0) -> ConvBNVAE:
    """A few real Adam steps (BCE + KL) so BatchNorm statistics and weights are trained."""
    import numpy as np

    torch.manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        x = x_all[(step * 64) % len(x_all) :][:64]
        out = ConvBNVAE.encode(model, x)
        mu, logvar = (out.loc, 2 * torch.log(out.scale)) if model.posterior == "normal" else out
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_hat = ConvBNVAE.decode(model, z)
        recon = (
            nn.functional.binary_cross_entropy_with_logits(x_hat, x, reduction="sum")
            if model.logits
            else nn.functional.binary_cross_entropy(x_hat, x, reduction="sum")
        )
        loss = recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class TanhVAE(nn.Module):
    """A CelebA conv VAE written as the popular PyTorch VAE collections write it (their
    ``VanillaVAE``): 64x64 RGB in [-1, 1], stride-2 convs with BatchNorm + LeakyReLU, a
    Linear after them (so one fixed size), ``encode`` returning a *list*, a decoder ending
    in ``Tanh``. Smaller widths than theirs, so the tests stay quick."""

    def __init__(self, latent: int = 16, hidden=(16, 32, 64, 64, 64)):
        super().__init__()
        layers, c = [], 3
        for h in hidden:
            layers += [nn.Conv2d(c, h, 3, 2, 1), nn.BatchNorm2d(h), nn.LeakyReLU()]
            c = h
        self.encoder = nn.Sequential(*layers)
        self.fc_mu = nn.Linear(hidden[-1] * 4, latent)
        self.fc_var = nn.Linear(hidden[-1] * 4, latent)
        self.decoder_input = nn.Linear(latent, hidden[-1] * 4)
        up = []
        back = list(reversed(hidden))
        for a, b in zip(back, back[1:]):
            up += [
                nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(),
            ]
        self.decoder = nn.Sequential(*up)
        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(back[-1], back[-1], 3, 2, 1, output_padding=1),
            nn.BatchNorm2d(back[-1]),
            nn.LeakyReLU(),
            nn.Conv2d(back[-1], 3, 3, padding=1),
            nn.Tanh(),
        )
        self.last = hidden[-1]

    def encode(self, x):
        h = torch.flatten(self.encoder(x), start_dim=1)
        return [self.fc_mu(h), self.fc_var(h)]

    def decode(self, z):
        h = self.decoder_input(z).view(-1, self.last, 2, 2)
        return self.final_layer(self.decoder(h))


def _train_on_signed_images(model, images, loss_of, steps: int, seed: int):
    """``steps`` Adam steps (batches of 32, lr 1e-3) of ``loss_of(model, x)`` on images
    [N, H, W, C] uint8 scaled to [-1, 1]; the model comes back in eval mode."""
    import numpy as np

    torch.manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    x_all = x_all / 127.5 - 1.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        loss = loss_of(model, x_all[(step * 32) % len(x_all) :][:32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def train_tanh_briefly(model: TanhVAE, images, steps: int = 20, seed: int = 0) -> TanhVAE:
    """A few Adam steps on [-1, 1] images (MSE + KL, as that collection trains it)."""

    def loss_of(model, x):
        mu, logvar = model.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return nn.functional.mse_loss(model.decode(z), x) - 1e-4 * torch.mean(
            torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        )

    return _train_on_signed_images(model, images, loss_of, steps, seed)


def small_autoencoder_kl(channels: int = 3, side: int = 32, seed: int = 0):
    """A diffusers AutoencoderKL with the SD layout scaled down (two blocks, 4 latent
    channels, a mid-block with attention), random weights."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=side,
    ).eval()


def train_kl_briefly(model, images, steps: int = 30, seed: int = 0):
    """A few Adam steps of a diffusers AutoencoderKL on [-1, 1] images [N, H, W, C] uint8
    (MSE of the decoded sample + a small KL, as latent-diffusion autoencoders train)."""

    def loss_of(model, x):
        dist = model.encode(x).latent_dist
        return (
            nn.functional.mse_loss(model.decode(dist.sample()).sample, x) + 1e-6 * dist.kl().mean()
        )

    return _train_on_signed_images(model, images, loss_of, steps, seed)

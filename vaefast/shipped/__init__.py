"""The exported models that ship inside the package, one table (``SHIPPED``): every
command and function that takes an exported model folder also takes one of these names,
from any working folder (``vaefast embed mnist5k-z20 mnist5k --out e.zarr``).

The folders are package data beside this module; ``make export`` rebuilds them
(``vaefast.shipped.build``, the torch side). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Shipped:
    """One shipped model: what it is, and how ``make export`` trains and exports it."""

    describe: str
    train: dict = field(default_factory=dict)  # vaefast.models.train.train options beyond the data
    variants: tuple[str, ...] = ("int8",)  # written beside fp32


SHIPPED = {
    "mnist5k-z20": Shipped("the PyTorch example's MLP VAE, Z=20", {"latent_dim": 20}),
    "mnist5k-z2": Shipped("the same with Z=2 (its μ is the map)", {"latent_dim": 2}),
    "mnist5k-conv-z16": Shipped(
        "a conv VAE, Z=16, with static int8",
        {"arch": "conv", "latent_dim": 16, "hidden_dim": 256},
        ("int8", "int8-static"),
    ),
}


def folder(name: str) -> Path:
    """The installed folder of the shipped model ``name`` (a key of ``SHIPPED``)."""
    return Path(str(resources.files(__name__) / name))


def describe() -> str:
    """The shipped models as one line of help text."""
    return "; ".join(f"{name}: {s.describe}" for name, s in SHIPPED.items())

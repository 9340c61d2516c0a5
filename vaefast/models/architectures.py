"""The architectures ``vaefast train`` builds: one registry, readable without torch.

Each entry says what the model is, which sample shape it takes for a dataset (refusing
data it cannot take) and which ``vaefast.models.modules`` class builds it. The CLI's ``--arch``
choices and ``train``'s checks of the data come from here before torch loads, so a wrong
name or unfit data is one line in a fraction of a second, and ``train --help`` needs no
torch. Adding an architecture is its class in ``vaefast.models.modules`` plus its entry here;
``vaefast.models.modules.build`` finds the class by the entry's name (this module never imports
the torch side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from vaefast.errors import VaefastError
from vaefast.layout import channels_first


def check_conv_sides(h: int, w: int) -> None:
    """The conv VAE's one constraint: two stride-2 convolutions down and their mirror
    images up need image sides divisible by 4."""
    if h % 4 or w % 4:
        raise VaefastError(f"the conv VAE needs image sides divisible by 4, got {h}x{w}")


def conv_input(n_features: int, image_shape: Any) -> tuple[int, ...]:
    """[C, H, W] of image data for the conv VAE (``check_conv_sides``)."""
    if image_shape is None:
        raise VaefastError(
            f"the conv VAE needs image data; these samples are {n_features} "
            "features with no image shape"
        )
    c, h, w = channels_first(image_shape)
    check_conv_sides(h, w)
    return c, h, w


@dataclass(frozen=True)
class Architecture:
    """One registry entry: what it is, the sample shape it takes for data of
    ``n_features`` features shown as ``image_shape``, and its torch class in
    ``vaefast.models.modules`` (whose ``from_sizes(config["model"])`` builds it)."""

    describe: str
    input_shape: Callable[[int, Any], tuple[int, ...]]
    model_class: str


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(
        "the official PyTorch example's fully connected VAE (any data, flattened)",
        lambda n_features, image_shape: (n_features,),
        "VAE",
    ),
    "conv": Architecture(
        "a small convolutional VAE (images with sides divisible by 4)", conv_input, "ConvVAE"
    ),
}


def architecture(name: str) -> Architecture:
    """The registry entry of an architecture, or a clear error."""
    if name not in ARCHITECTURES:
        raise VaefastError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]

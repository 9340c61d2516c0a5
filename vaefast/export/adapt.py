"""The user's model as export sees it: its halves (``encode`` -> (mu, logvar) whatever it
returns, ``decode`` -> images), what running it on the example shows (``Probe``), the
facts diffusers' classes carry, and the pixel ranges it takes and gives."""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from vaefast.errors import VaefastError, first_line
from vaefast.layout import check_pixels

RANDOM_CHECK_ROWS = 16  # encode twice on this many example rows: a random encode differs


DECODER_OUTPUTS = ("probs", "logits")


def sha256_state(model) -> str:
    """Hex sha256 of a module's state dict (names, dtypes, shapes and bytes, sorted)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def posterior(out) -> tuple:
    """(mu, logvar) from what a VAE's ``encode`` returns: a (mu, logvar) tuple or list, a
    ``torch.distributions.Normal``, an object with ``.mean`` and ``.logvar`` (or ``.std``
    / ``.var``) such as diffusers' ``DiagonalGaussianDistribution``, or an object holding
    one in ``.latent_dist`` (diffusers' ``AutoencoderKLOutput``; also inside a 1-tuple).
    Returns None when ``out`` is none of these."""
    import torch

    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if hasattr(out, "latent_dist"):
        out = out.latent_dist
    if isinstance(out, torch.distributions.Normal):
        return out.loc, 2.0 * torch.log(out.scale)
    if isinstance(out, (tuple, list)):
        return (
            tuple(out) if len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out) else None
        )
    mean = getattr(out, "mean", None)
    if isinstance(mean, torch.Tensor):
        for name, to_logvar in (
            ("logvar", lambda t: t),
            ("std", lambda t: 2.0 * torch.log(t)),
            ("var", torch.log),
        ):
            value = getattr(out, name, None)
            if isinstance(value, torch.Tensor):
                return mean, to_logvar(value)
    return None


def decoded(out):
    """The image tensor from what a VAE's ``decode`` returns: a tensor, or an object with
    ``.sample`` (diffusers' ``DecoderOutput``; also inside a 1-tuple). None otherwise."""
    import torch

    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if isinstance(out, torch.Tensor):
        return out
    sample = getattr(out, "sample", None)
    return sample if isinstance(sample, torch.Tensor) else None


def _methods(model, encode: Callable | None, decode: Callable | None):
    encode = encode or getattr(model, "encode", None)
    decode = decode or getattr(model, "decode", None)
    for name, fn in (("encode", encode), ("decode", decode)):
        if not callable(fn):
            raise VaefastError(
                f"the model has no {name} method; pass {name}=a function "
                f"(e.g. {name}=model.my_{name})"
            )
    return encode, decode


def halves(
    model, encode: Callable | None, decode: Callable | None, input_shape, decoder_output: str
):
    """(Encoder, Decoder) modules wrapping the user's model: the encoder returns
    (mu, logvar) whatever ``encode`` returns; the decoder returns [batch, *input_shape]
    images (flat decoder outputs reshaped; logits through a sigmoid)."""
    from torch import nn

    encode, decode = _methods(model, encode, decode)
    if decoder_output not in DECODER_OUTPUTS:
        raise VaefastError(f"decoder_output must be probs or logits, got {decoder_output!r}")

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return posterior(encode(x))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, z):
            return as_images(decoded(decode(z)), decoder_output, input_shape)

    return Encoder().eval(), Decoder().eval(), encode, decode


def as_images(x_hat, decoder_output: str, input_shape):
    """A decoder's output as the exported decoder returns it: [batch, *input_shape]
    (flat outputs reshaped), probabilities (logits through a sigmoid)."""
    import torch

    if decoder_output == "logits":
        x_hat = torch.sigmoid(x_hat)
    if x_hat.ndim != len(input_shape) + 1:
        x_hat = x_hat.reshape(x_hat.shape[0], *input_shape)
    return x_hat


@dataclass
class Probe:
    """What running the eager model on the example told: latent shape, and for a fully
    convolutional model the size multiple it takes (None: fixed size, ``why``)."""

    latent_shape: tuple[int, ...]
    multiple: int | None
    why: str
    second_size: tuple[int, int] | None = None
    #: eager (mu, logvar, x_hat of mu) on the example, as numpy: the verification's reference
    outputs: tuple | None = None


def _probe(
    encode,
    decode,
    x,
    input_shape,
    decoder_output: str,
    output_range: tuple[float, float],
    bounded: bool,
) -> Probe:
    """Run the eager halves on the example (and at a second size for spatial latents);
    return what they showed, or raise a one-line error."""
    import torch

    with torch.no_grad():
        mu, logvar = _encode_checked(encode, x)
        b = x.shape[0]
        x_hat = _decode_checked(decode, mu, b, input_shape)
        lo, hi = output_range
        if decoder_output == "probs" and bounded and (x_hat.min() < lo or x_hat.max() > hi):
            raise VaefastError(
                f"decode returned values in [{float(x_hat.min()):.3g}, "
                f"{float(x_hat.max()):.3g}], outside output_range ({lo:g}, {hi:g}); pass "
                "output_range=(lo, hi) for a decoder with another range (e.g. (-1, 1) "
                "after a Tanh), or decoder_output='logits' if it returns logits"
            )
        probe = _size_probe(encode, decode, x, input_shape, tuple(mu.shape[1:]))
    images = as_images(x_hat, decoder_output, input_shape)
    probe.outputs = tuple(t.numpy() for t in (mu, logvar, images))
    return probe


def _encode_checked(encode, x):
    import torch

    few = x[:RANDOM_CHECK_ROWS]  # randomness shows on a few rows as well as on all
    try:
        first, again, second = encode(x), encode(few), encode(few)
    except Exception as e:
        raise VaefastError(
            f"encode failed on the example batch {list(x.shape)}: "
            f"{type(e).__name__}: {first_line(e)}"
        ) from None
    pair = posterior(first)
    if pair is None:
        raise VaefastError(
            f"encode must return (mu, logvar) tensors, a torch.distributions.Normal, or an "
            f"object with .mean and .logvar (or .std / .var) or .latent_dist; got "
            f"{_kind(first)}"
        )
    mu, logvar = pair
    b = x.shape[0]
    if mu.ndim < 2 or mu.shape[0] != b:
        raise VaefastError(
            f"encode must return mu of shape [batch, *latent_shape]; got "
            f"{list(mu.shape)} for a batch of {b}"
        )
    if tuple(logvar.shape) != tuple(mu.shape):
        raise VaefastError(
            f"encode returned mu of shape {list(mu.shape)} and logvar of shape "
            f"{list(logvar.shape)}; they must have the same shape"
        )
    if any(not torch.equal(a, c) for a, c in zip(posterior(again), posterior(second))):
        raise VaefastError(
            "encode is random: two calls on the same batch differ; the "
            "reparameterization (sampling z) must stay out of encode, "
            "which should return the posterior's mean and log-variance"
        )
    return mu, logvar


def _decode_checked(decode, z, b: int, input_shape):
    try:
        out = decode(z)
    except Exception as e:
        raise VaefastError(
            f"decode failed on z of shape {list(z.shape)}: {type(e).__name__}: {first_line(e)}"
        ) from None
    x_hat = decoded(out)
    if x_hat is None:
        raise VaefastError(
            f"decode must return a tensor or an object with a .sample tensor, got {_kind(out)}"
        )
    if x_hat.shape[0] != b or x_hat[0].numel() != int(np.prod(input_shape)):
        raise VaefastError(
            f"decode returned shape {list(x_hat.shape)}; expected "
            f"[{b}, {', '.join(map(str, input_shape))}] like the input"
        )
    return x_hat


def _size_probe(encode, decode, x, input_shape, latent_shape) -> Probe:
    """Whether a model takes other image sizes: only spatial latents can (a flat latent
    fixes the decoder's size); checked on a second, non-square size."""
    import torch

    if len(input_shape) != 3 or len(latent_shape) != 3:
        return Probe(latent_shape, None, "flat latents: the decoder makes one image size")
    (c, h, w), (cz, lh, lw) = input_shape, latent_shape
    m = h // lh
    if m < 1 or lh * m != h or lw * m != w:
        return Probe(
            latent_shape, None, f"latent {lh}x{lw} does not divide the input {h}x{w} evenly"
        )
    size = (h + m, w + 2 * m)
    x2 = torch.nn.functional.interpolate(x[:2], size=size, mode="bilinear", align_corners=False)
    try:
        pair = posterior(encode(x2))
        x_hat = decoded(decode(pair[0])) if pair is not None else None
    except Exception as e:
        return Probe(
            latent_shape,
            None,
            f"fixed size: encode or decode fails at {size[0]}x{size[1]} ({type(e).__name__})",
        )
    if (
        pair is None
        or tuple(pair[0].shape[1:]) != (cz, size[0] // m, size[1] // m)
        or x_hat is None
        or tuple(x_hat.shape[1:]) != (c, *size)
    ):
        return Probe(
            latent_shape,
            None,
            f"fixed size: at {size[0]}x{size[1]} the shapes do not follow the input",
        )
    return Probe(
        latent_shape, m, f"fully convolutional: heights and widths that are multiples of {m}", size
    )


def _kind(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(_kind(v) for v in value)})"
    return type(value).__name__


def _to_eval_mode(model) -> bool:
    """Put the model in eval mode, as inference runs it, saying so on stderr if it was
    training; returns whether it was (so its mode can be restored)."""
    was_training = model.training
    if was_training:
        print(
            "note: the model was in training mode; exporting it in eval mode (BatchNorm "
            "running statistics, no dropout), as inference runs it",
            file=sys.stderr,
        )
    model.eval()
    return was_training


def _ranges(known: dict, input_range, output_range, decoder_output: str):
    """(input range, output range, bounded) of a model: the given ranges, else what
    vaefast knows of its class (diffusers'), else (0, 1); ``bounded``: its decoder's
    output is checked against the range (not for a known class's unbounded decoder)."""
    input_range = check_range(input_range or known.get("input_range") or (0.0, 1.0), "input_range")
    bounded = output_range is not None or not known
    output_range = check_range(
        output_range or known.get("output_range") or (0.0, 1.0), "output_range"
    )
    if decoder_output == "logits" and output_range != (0.0, 1.0):
        raise VaefastError(
            "decoder_output='logits' gets a sigmoid, so its output range is "
            "(0, 1); drop output_range"
        )
    return input_range, output_range, bounded


def check_range(value, name: str) -> tuple[float, float]:
    """A (lo, hi) pixel range with lo < hi, or a one-line error."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise VaefastError(f"{name} must be two numbers (lo, hi), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise VaefastError(f"{name} ({lo:g}, {hi:g}): lo must be below hi")
    return lo, hi


def _example(example, pixel_scale: float, input_range: tuple[float, float]):
    """The example batch as float32 in the model's input range (a torch tensor)."""
    import torch

    array = (
        example.detach().cpu().numpy() if isinstance(example, torch.Tensor) else np.asarray(example)
    )
    if array.ndim < 2 or array.shape[0] < 2:
        raise VaefastError(
            f"example must be a batch [B, *input_shape] with B >= 2, got shape {list(array.shape)}"
        )
    if array.dtype.kind not in "uif":
        raise VaefastError(f"example has dtype {array.dtype}; pass uint8 pixels or floats")
    check_pixels(array, pixel_scale, "example")  # images as the runtime takes them
    unit = array / np.float32(pixel_scale) if array.dtype.kind in "ui" else array
    lo, hi = input_range
    return torch.from_numpy(np.ascontiguousarray(unit * (hi - lo) + lo, np.float32))


def _unit(x: np.ndarray, input_range: tuple[float, float]) -> np.ndarray:
    """Model-range inputs back to [0, 1] images (for the runtime's agreement checks)."""
    lo, hi = input_range
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def diffusers_facts(model) -> dict[str, Any]:
    """What vaefast knows of a diffusers autoencoder (``AutoencoderKL`` and its kin),
    recognised by class without importing diffusers: its pixel ranges ((-1, 1), the
    decoder unclamped), its config's ``scaling_factor`` / ``shift_factor``, and the halves
    whose Python code branches on the batch size (the decoder's upsamplers call
    ``.contiguous()`` from batch 64 on: traced with the batch axis left to the exporter
    at once, not after a failed trace). Empty for other models."""
    cls = type(model)
    if not (cls.__module__.startswith("diffusers.") and cls.__name__.startswith("AutoencoderKL")):
        return {}
    config = dict(getattr(model, "config", {}) or {})
    return {
        "input_range": (-1.0, 1.0),
        "output_range": (-1.0, 1.0),
        "latent_scaling": {
            "scaling_factor": config.get("scaling_factor"),
            "shift_factor": config.get("shift_factor"),
            "note": "latents for a diffusion model are (z - shift_factor) "
            "* scaling_factor, z ~ the posterior",
        },
        "architecture": {
            "diffusers": cls.__name__,
            "config": {k: v for k, v in config.items() if not k.startswith("_")},
        },
        "batch_branches": ("decoder",),
    }

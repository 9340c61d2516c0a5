"""Eager PyTorch twins of exported models, called as their users call them, for the
benchmark suites."""

from __future__ import annotations

from pathlib import Path


def eager_model(folder: Path, module: str | None = None):
    """The eager model of an export: rebuilt from the ONNX weights for vaefast-trained
    models, the user's ``FILE.py:FUNCTION[@WEIGHTS]``, or ``diffusers:DIR`` (a saved
    ``AutoencoderKL``)."""
    from vaefast.export import load_diffusers, load_eager, load_module

    if module and module.startswith("diffusers:"):
        return load_diffusers(module.partition(":")[2])[0]
    if module:
        target, _, weights = module.partition("@")
        return load_module(target, weights or None).eval()
    return load_eager(folder)


def eager_calls(folder: Path, module: str | None = None):
    """(encode, decode) as a user writes them — the model's own ``encode``/``decode``
    (diffusers: ``encode(x).latent_dist``, ``decode(z).sample``), their outputs unwrapped
    to μ and x̂ — on inputs in the model's own range. Call them under
    ``torch.inference_mode()``."""
    from vaefast.export import decoded, posterior

    model = eager_model(folder, module)

    def encode(x):
        return posterior(model.encode(x))[0]

    def decode(z):
        return decoded(model.decode(z))

    return encode, decode

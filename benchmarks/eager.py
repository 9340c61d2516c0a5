"""Eager PyTorch twins of exported models, for the benchmark suites."""

from __future__ import annotations

from pathlib import Path


def eager_halves(folder: Path, module: str | None = None):
    """The eager (encoder, decoder) of an export, with outputs as the exported graph gives
    them: rebuilt from the ONNX weights for vaefast-trained models, or from the user's
    ``FILE.py:FUNCTION[@WEIGHTS]``."""
    from vaefast import runtime
    from vaefast.export import halves, load_eager, load_module

    meta = runtime.read_model_json(folder)
    if module:
        target, _, weights = module.partition("@")
        model = load_module(target, weights or None)
    else:
        model = load_eager(folder)
    enc, dec, _, _ = halves(model, None, None, runtime.input_shape(meta),
                            meta.get("decoder_output", "probs"))
    return enc, dec

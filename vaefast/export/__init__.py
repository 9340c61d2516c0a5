"""torch -> ONNX export of any VAE's encoder and decoder, verified against the eager model.

``export_vae(model, out, example=x)`` takes any ``torch.nn.Module`` with
``encode(x) -> (mu, logvar)`` (or a distribution with ``.mean`` and ``.stddev``/``.var``,
such as diffusers' ``latent_dist``) and ``decode(z) -> x_hat`` (probabilities, logits or
any range the user names), or explicit ``encode``/``decode`` callables;
``export(run_dir, out)`` does the same for a ``vaefast train`` run folder,
``export_module("file.py:fn", ...)`` for a model defined in the user's own file and
``export_diffusers(folder, out)`` for a saved diffusers ``AutoencoderKL``.

Writes into ``out`` (built in a temporary folder, renamed only when verification
passes): ``encoder.onnx`` (``x`` [batch, *input_shape] in the model's own pixel range ->
``mu``, ``logvar``: flat [batch, Z] or spatial [batch, C, h, w]) and ``decoder.onnx``
(``z`` -> ``x_hat`` in the model's output range), both fp32, dynamic batch (and height
and width for fully convolutional models), opset 18, self-contained; the variants asked
for (``vaefast.runtime.variants``); ``model.json`` (``vaefast.runtime.manifest``; the same
facts sit in each ONNX file's metadata_props, with the ranges the runtime maps images through) and
``export_report.json`` (eager vs ONNX Runtime agreement, each variant's and engine's
agreement with fp32, each step's memory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vaefast.runtime import manifest, memory
from vaefast.runtime import variants as variants_mod
from vaefast.atomic import atomic_dir, check_new_output
from vaefast.errors import VaefastError
from vaefast.export.adapt import (
    DECODER_OUTPUTS,
    _example,
    _probe,
    _ranges,
    _to_eval_mode,
    check_range,
    decoded,
    diffusers_facts,
    halves,
    posterior,
    sha256_state,
)
from vaefast.export.load import (
    _calibration_images,
    _load_sized,
    _verification_inputs,
    load_diffusers,
    load_eager,
    load_module,
    sha256_file,
)
from vaefast.export.report import _model_json, _variants_and_engines, format_report
from vaefast.export.trace import OPSET, _quiet
from vaefast.export.verify import (
    LARGE_LATENT,
    LARGE_LATENT_TOLERANCE,
    TOLERANCE,
    _eager_fits_one_row,
    _export_verified,
)
from vaefast.layout import arrange, describe

__all__ = [
    "DECODER_OUTPUTS",
    "OPSET",
    "TOLERANCE",
    "check_range",
    "decoded",
    "export",
    "export_diffusers",
    "export_module",
    "export_vae",
    "format_report",
    "load_diffusers",
    "load_eager",
    "load_module",
    "posterior",
    "sha256_file",
]


def export_vae(
    model,
    out: str | os.PathLike,
    *,
    example,
    encode: Callable | None = None,
    decode: Callable | None = None,
    decoder_output: str = "probs",
    input_range: tuple[float, float] | None = None,
    output_range: tuple[float, float] | None = None,
    label_names: list[str] | None = None,
    variants: Sequence[str] = (),
    calibration=None,
    force: bool = False,
    tolerance: float | None = None,
    seed: int = 0,
    pixel_scale: float = 255.0,
    image_shape=None,
    training: dict[str, Any] | None = None,
    architecture: dict | None = None,
    weights_sha256: str | None = None,
    memory_budget: int | str | None = None,
) -> dict[str, Any]:
    """Export any PyTorch VAE to ONNX at ``out``, verify it, and return the report.

    ``example`` is a real batch [B, *input_shape] of images as the runtime takes them
    (uint8 pixels or floats in [0, 1]); it is mapped into ``input_range``, the pixel
    range the model itself takes (default (0, 1); (-1, 1) for diffusers'
    ``AutoencoderKL``, recognised from the object). ``output_range`` is the range its
    decoder returns (default (0, 1)). The ONNX files compute exactly what the model
    computes, in its own ranges; model.json records them and the runtime maps images
    in and out. Latents may be flat [Z] or spatial [C, h, w]; a fully convolutional
    model exports with dynamic height and width, verified at a second size.

    A model left in training mode is exported in eval mode (a note on stderr; its
    mode is restored after). Fails with VaefastError, leaving nothing at ``out``,
    when fp32 error against eager — max abs error over max(1, the tensor's largest
    magnitude) — exceeds ``tolerance`` (default 1e-5, 1e-4 for latents of more than 1,000
    values) or the model cannot be exported.
    ``pixel_scale``: integer inputs are divided by it at run time. ``variants``: names in
    ``vaefast.variants_mod.VARIANTS`` written beside fp32, each with its agreement with fp32
    in the report; a calibrated one (``int8-static``) is calibrated on ``calibration``
    (images as ``example`` takes them; default: ``example``) and the latents the fp32
    encoder gives them.

    ``memory_budget`` (bytes, or text such as ``"4G"``; default 4 GB) bounds the peak RSS
    of every step: verification and calibration batches are fitted to it from measured
    needs, and the batches used and each step's peak RSS are in the report's ``memory``.
    A step that cannot fit even at batch 1 fails in one line naming it.
    """
    import torch

    out = Path(out)
    check_new_output(out, force)
    steps = memory.Steps(memory.parse_budget(memory_budget))
    if not isinstance(model, torch.nn.Module):
        raise VaefastError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    known = diffusers_facts(model)
    input_range, output_range, bounded = _ranges(known, input_range, output_range, decoder_output)
    names = tuple(dict.fromkeys(n for n in variants if n != variants_mod.REFERENCE))
    for name in names:
        variants_mod.variant(name)  # an unknown name: refused before any work
    x = _example(example, pixel_scale, input_range)
    input_shape = tuple(int(s) for s in x.shape[1:])
    x_cal = None
    if any(variants_mod.variant(n).calibrated for n in names):
        x_cal = x if calibration is None else _example(calibration, pixel_scale, input_range)
        if tuple(x_cal.shape[1:]) != input_shape:
            raise VaefastError(
                f"calibration inputs have shape {describe(x_cal.shape[1:])}; "
                f"the model takes {describe(input_shape)}"
            )
    was_training = _to_eval_mode(model)
    try:
        enc, dec, encode, decode = halves(model, encode, decode, input_shape, decoder_output)
        with _quiet():
            probe = _probe(encode, decode, x, input_shape, decoder_output, output_range, bounded)
        if tolerance is None:
            small = int(np.prod(probe.latent_shape)) <= LARGE_LATENT
            tolerance = TOLERANCE if small else LARGE_LATENT_TOLERANCE
        meta = _model_json(
            input_shape,
            probe,
            image_shape,
            pixel_scale,
            label_names,
            decoder_output,
            input_range,
            output_range,
            not bounded,
            known.get("latent_scaling"),
            training,
            architecture or known.get("architecture"),
            weights_sha256 or sha256_state(model),
            names,
        )
        with _quiet():
            _eager_fits_one_row(enc, dec, input_shape, input_range, steps)
        with atomic_dir(out, force=force) as tmp, _quiet():
            report = {
                "tolerance": tolerance,
                "fp32": _export_verified(
                    enc, dec, x, tmp, meta, probe, known, seed, steps, tolerance
                ),
            }
            worst = report["fp32"]["max_scaled"]
            if not worst <= tolerance:
                raise VaefastError(
                    f"export failed verification: fp32 error {worst:.3g} (max abs error over "
                    f"max(1, the output's largest magnitude)) exceeds {tolerance:g}"
                )
            # agreement checks run another engine beside the reference's outputs (OpenVINO
            # holds more per row than ONNX Runtime): half the fitted batch
            rows = max(1, report["fp32"]["batch_rows"] // 2)
            meta["memory"] = {
                "onnx_bytes_per_row": report["fp32"]["onnx_bytes_per_row"],
                "batch_rows": report["fp32"]["runtime_batch_rows"],
            }
            manifest.write_model_json(tmp, meta)
            memory.trim()
            report |= _variants_and_engines(tmp, names, x, x_cal, input_range, seed, rows, steps)
            report["memory"] = steps.report()
            manifest.write_report(tmp, report)
    finally:
        model.train(was_training)
    return report


def export(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    variants: Sequence[str] = (),
    calibration: str | None = None,
    force: bool = False,
    tolerance: float = TOLERANCE,
    seed: int = 0,
    memory_budget: int | str | None = None,
) -> dict[str, Any]:
    """Export a ``vaefast train`` run folder; verified on the run's test split."""
    from vaefast.models.train import WEIGHTS, load_run

    check_new_output(Path(out), force)
    model, config = load_run(run_dir)
    try:
        ds = _load_sized(config["data"], model.input_shape, config.get("image_shape"))
    except VaefastError as e:
        raise VaefastError(
            f"cannot load the run's data {config['data']!r} to verify the export ({e})"
        ) from None
    example = arrange(ds.X_test, model.input_shape, ds.image_shape)
    training = {
        k: config.get(k)
        for k in ("data", "seed", "epochs", "batch_size", "lr", "n_train", "n_test")
    } | {"final_test_loss": config["history"][-1]["test_loss"]}
    return export_vae(
        model,
        out,
        example=example,
        label_names=config.get("label_names"),
        variants=variants,
        calibration=_calibration_images(calibration, model.input_shape, config.get("image_shape")),
        force=force,
        tolerance=tolerance,
        seed=seed,
        pixel_scale=config.get("pixel_scale", 255.0),
        image_shape=config.get("image_shape"),
        training=training,
        architecture=config["model"],
        weights_sha256=sha256_file(Path(run_dir) / WEIGHTS),
        memory_budget=memory_budget,
    )


def export_module(
    target: str,
    out: str | os.PathLike,
    *,
    input_shape: tuple[int, ...],
    weights: str | os.PathLike | None = None,
    data: str | None = None,
    decoder_output: str = "probs",
    input_range: tuple[float, float] | None = None,
    output_range: tuple[float, float] | None = None,
    variants: Sequence[str] = (),
    calibration: str | None = None,
    force: bool = False,
    seed: int = 0,
    memory_budget: int | str | None = None,
) -> dict[str, Any]:
    """Export the model ``file.py:function`` builds, verified on ``data``'s test split
    (laid out as ``input_shape``) or, without data, on seeded uniform random inputs."""
    check_new_output(Path(out), force)
    model = load_module(target, weights)
    inputs = _verification_inputs(data, tuple(int(s) for s in input_shape), seed)
    return export_vae(
        model,
        out,
        decoder_output=decoder_output,
        input_range=input_range,
        output_range=output_range,
        variants=variants,
        force=force,
        calibration=_calibration_images(calibration, input_shape),
        seed=seed,
        architecture={"module": target},
        memory_budget=memory_budget,
        **inputs,
    )


def export_diffusers(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    input_shape: tuple[int, ...] | None = None,
    data: str | None = None,
    n_examples: int = 8,
    variants: Sequence[str] = (),
    calibration: str | None = None,
    force: bool = False,
    seed: int = 0,
    memory_budget: int | str | None = None,
) -> dict[str, Any]:
    """Export a local diffusers ``AutoencoderKL`` folder: pixel ranges (-1, 1), the
    example size from its config's ``sample_size`` (``input_shape`` overrides), its
    ``scaling_factor`` / ``shift_factor`` recorded; verified on ``data``'s test split or
    on ``n_examples`` seeded random images."""
    check_new_output(Path(out), force)
    model, weights = load_diffusers(folder)
    if input_shape is None:
        side = model.config.sample_size
        h, w = (side, side) if isinstance(side, int) else tuple(side)
        input_shape = (int(model.config.in_channels), int(h), int(w))
    inputs = _verification_inputs(data, tuple(int(s) for s in input_shape), seed, n_examples)
    return export_vae(
        model,
        out,
        variants=variants,
        force=force,
        seed=seed,
        calibration=_calibration_images(calibration, input_shape),
        weights_sha256=sha256_file(weights),
        memory_budget=memory_budget,
        **inputs,
    )

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
for (``vaefast.variants``); ``model.json`` (``vaefast.manifest``; the same facts sit in
each ONNX file's metadata_props, with the ranges the runtime maps images through) and
``export_report.json`` (eager vs ONNX Runtime agreement, each variant's and engine's
agreement with fp32, each step's memory).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from vaefast import engines, manifest, memory, runtime
from vaefast import variants as variants_mod
from vaefast.atomic import atomic_dir, check_new_output
from vaefast.errors import VaefastError, first_line
from vaefast.extras import require
from vaefast.layout import arrange, check_pixels, describe, display_shape
from vaefast.metrics import knn_overlap, max_errors
from vaefast.versions import package_versions

OPSET = 18
TOLERANCE = 1e-5  # fp32 max abs error allowed between eager and ONNX Runtime
LARGE_LATENT = 1000  # latents of more values than this (spatial ones) get
LARGE_LATENT_TOLERANCE = 1e-4  # this tolerance: deeper conv stacks sum in another order
CHECK_BATCHES = (1, 7, 256)  # random batches checked, with the runtime's default batch
EXPORTERS = ("torchscript", "dynamo")  # tried in this order (``_export_verified``)
EXPORT_ROWS = 8  # example rows the exporters trace
RANDOM_CHECK_ROWS = 16  # encode twice on this many example rows: a random encode differs
# the runtime's default batch: one call at least this long, so per-call costs vanish, and no
# longer (larger batches of a conv VAE were no faster here, and cost memory and checking)
CALL_SECONDS = 0.05
FORMAT = "vaefast-exported/1"
DECODER_OUTPUTS = ("probs", "logits")
CPU = engines.ENGINES["onnxruntime"].on_cpu
# calibrate 8 rows a run where ONNX Runtime fits >= this many rows in the budget, else 1:
# the calibrator's graph keeps more alive than inference does (ranges are merged exactly,
# so the batch changes the time, never the model)
CALIBRATE_8_FROM = 64  # the reference: ONNX Runtime on the CPU


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_state(model) -> str:
    """Hex sha256 of a module's state dict (names, dtypes, shapes and bytes, sorted)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


# --- the two halves, as modules the exporter can trace ----------------------------------


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


def _exporter_error(e: BaseException, module, example, dynamic_shapes) -> VaefastError:
    """A one-line error naming the op the exporter could not translate and where in the
    user's model it comes from (the module path and source line torch.export recorded)."""
    import torch

    text = "\n".join(str(x) for x in (e, e.__cause__, e.__context__) if x)
    found = re.search(r"target=torch\.ops\.(\w+)\.(\w+)", text) or re.search(
        r"OpOverload\(op='(\w+)\.(\w+)'", text
    )
    if found is None:
        lines = [ln for ln in text.splitlines() if "Error" in ln or "error" in ln]
        return VaefastError(f"the ONNX exporter failed: {(lines or [first_line(e)])[-1][:300]}")
    op = f"{found.group(1)}.{found.group(2)}"
    half = (
        "encode"
        if isinstance(module, torch.nn.Module) and type(module).__name__ == "Encoder"
        else "decode"
    )
    where = f" in {half}"
    try:  # torch.export succeeded (the failure is in ONNX translation): find the node
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
        base = found.group(2).split("_")[-1]
        for node in program.graph.nodes:
            if node.op == "call_function" and base in str(node.target):
                op = f"{str(node.target).rsplit('.', 1)[0]} ({op})"
                stack = [
                    v for k, v in (node.meta.get("nn_module_stack") or {}).items() if v[0]
                ]  # the wrapper itself has path ''
                if stack:
                    path, cls = stack[-1]
                    where += f", module {path} ({str(cls).rsplit('.', 1)[-1]})"
                break
    except Exception:
        pass
    return VaefastError(
        f"the ONNX exporter cannot handle op {op}{where}; replace it with ONNX-exportable torch ops"
    )


# --- export ------------------------------------------------------------------------------


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
    when fp32 max abs error against eager exceeds ``tolerance`` (default 1e-5, 1e-4
    for latents of more than 1,000 values) or the model cannot be exported.
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
            worst = report["fp32"]["max_abs"]
            if not worst <= tolerance:
                raise VaefastError(
                    f"export failed verification: fp32 max abs error "
                    f"{worst:.3g} exceeds {tolerance:g}"
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


def _variants_and_engines(
    folder: Path, names, x, x_cal, input_range, seed: int, rows: int, steps: memory.Steps
) -> dict[str, Any]:
    """Write each variant in ``names`` (calibrated ones on ``x_cal``) and measure its
    agreement with fp32 on ``x``, then every other installed engine's, ``rows`` at a
    time, each step's batch and peak RSS recorded in ``steps``."""
    report: dict[str, Any] = {}
    images = _unit(x.numpy(), input_range)
    calibrate = None
    if x_cal is not None:  # its session (and arena) gone before quantization
        calibrate = _calibration(
            runtime.load(folder, providers=CPU, spin=False), x_cal.numpy(), seed, rows
        )
        memory.trim()
    calibration_rows = 8 if rows >= CALIBRATE_8_FROM else 1
    fp32: list = []  # the reference's outputs, computed once (its session freed after)

    def against_fp32(name: str, providers: str) -> dict:
        if not fp32:
            fp32.extend(
                variants_mod.reference_outputs(
                    runtime.load(folder, providers=CPU, spin=False), images, rows
                )
            )
            memory.trim(collect=True)
        return variants_mod.agreement(
            tuple(fp32),
            lambda: runtime.load(folder, providers=providers, variant=name, spin=False),
            images,
            name,
            rows,
        )

    for name in names:
        with steps.measure(f"{name} quantize", batch=calibration_rows):
            facts = variants_mod.write(folder, name, calibrate, calibration_rows)
        memory.trim()
        with steps.measure(f"{name} agreement", batch=rows):
            report[name] = against_fp32(name, CPU) | facts
        memory.trim()
        if not report[name]["meets_target"]:
            print(
                f"warning: the {name} encoder keeps kNN@10 overlap "
                f"{report[name]['knn10_overlap_vs_fp32']:.3f} < "
                f"{variants_mod.variant(name).min_overlap}; prefer the fp32 models for this one",
                file=sys.stderr,
            )
    for engine in engines.ENGINES.values():  # the other engines', like a variant's
        if engine.report_key and engine.installed():
            with steps.measure(f"{engine.report_key} agreement", batch=rows):
                report[engine.report_key] = against_fp32(variants_mod.REFERENCE, engine.on_cpu)
    return report


def _calibration(
    reference: runtime.ExportedVAE, x: np.ndarray, seed: int, rows: int
) -> dict[str, np.ndarray]:
    """Real inputs of each fp32 model: ``x`` (in the model's range) for the encoder, and
    the latents it gives them — z = μ + σ·ε, seeded, as sampling feeds the decoder —
    encoded ``rows`` at a time."""
    parts = [
        reference.encoder_session.run(["mu", "logvar"], {"x": x[s : s + rows]})
        for s in range(0, len(x), rows)
    ]
    mu, logvar = (np.concatenate(p) for p in zip(*parts))
    eps = np.random.default_rng(seed).standard_normal(mu.shape).astype(np.float32)
    return {"encoder": x, "decoder": (mu + np.exp(0.5 * logvar) * eps).astype(np.float32)}


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


_TORCH_LOGGERS = (
    "torch.onnx",
    "torch._guards",
    "torch._dynamo",
    "torch.export",
    "torch.fx.experimental.symbolic_shapes",
)  # chatty while exporting


@contextlib.contextmanager
def _quiet():
    """No warnings or exporter logs on the user's terminal (failures become one line)."""
    loggers = [logging.getLogger(name) for name in _TORCH_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


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
    from vaefast.train import WEIGHTS, load_run

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


def load_module(target: str, weights: str | os.PathLike | None = None):
    """Build a model from ``path/to/file.py:function`` and load ``weights`` into it:
    safetensors, or a PyTorch state dict read with ``weights_only=True`` (never a pickle
    of arbitrary objects)."""
    path, sep, fn_name = target.rpartition(":")
    if not sep or not path.endswith(".py") or not fn_name.isidentifier():
        raise VaefastError(f"--module {target!r}: write it as path/to/file.py:function")
    if not Path(path).is_file():
        raise VaefastError(f"--module {target!r}: {path} not found")
    import torch

    spec = importlib.util.spec_from_file_location(f"vaefast_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise VaefastError(
            f"{path}: failed to import ({type(e).__name__}: {first_line(e)})"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise VaefastError(f"{path} has no function {fn_name}")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise VaefastError(f"{target}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        model.load_state_dict(_read_state(Path(weights), model))
    return model.eval()


def _read_state(path: Path, model) -> dict:
    import torch

    if not path.is_file():
        raise VaefastError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise VaefastError(
            f"{path}: not a loadable safetensors file or state dict ({first_line(e)})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VaefastError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        shapes = [k for k in set(got) & set(expected) if got[k] != expected[k]][:3]
        raise VaefastError(
            f"{path}: weights do not fit the model (missing {missing}, "
            f"unexpected {extra}, other shapes {shapes})"
        )
    return state


def _load_sized(spec: str, input_shape: tuple[int, ...], image_shape=None):
    """``vaefast.data.load(spec)``, encoded images decoded to the model's input size."""
    from vaefast import data

    return data.load(spec, data.preprocess_for(spec, display_shape(input_shape, image_shape)))


def _calibration_images(
    spec: str | None, input_shape: tuple[int, ...], image_shape=None, n: int = 256
) -> np.ndarray | None:
    """Up to ``n`` images of data spec ``spec`` laid out as ``input_shape`` (a seeded
    sample of its training split), to calibrate static int8; None without a spec."""
    if spec is None:
        return None
    ds = _load_sized(spec, input_shape, image_shape)
    rows = np.random.default_rng(0).permutation(len(ds.X_train))[:n]
    try:
        return arrange(ds.X_train[np.sort(rows)], input_shape, ds.image_shape)
    except VaefastError as e:
        raise VaefastError(f"--calibration {spec}: {e}") from None


def _verification_inputs(
    data: str | None, input_shape: tuple[int, ...], seed: int, n: int = 256
) -> dict[str, Any]:
    """export_vae's example and data facts: ``data``'s test split laid out as
    ``input_shape``, or ``n`` seeded uniform random images in [0, 1]."""
    if data is None:
        return {"example": np.random.default_rng(seed).random((n, *input_shape), dtype=np.float32)}
    ds = _load_sized(data, input_shape)
    return {
        "example": arrange(ds.X_test, input_shape, ds.image_shape),
        "label_names": ds.label_names,
        "pixel_scale": ds.scale,
        "image_shape": ds.image_shape,
        "training": {"data": data},
    }


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


DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def load_diffusers(folder: str | os.PathLike):
    """A diffusers ``AutoencoderKL`` from a local ``save_pretrained`` folder (config.json
    + safetensors weights; a pipeline folder's ``vae/`` is found too). Nothing is
    downloaded and no pickle is read. Returns (model, weights path)."""
    folder = Path(folder)
    if (folder / "vae" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "vae"
    if not folder.is_dir():
        raise VaefastError(f"--diffusers {folder}: no such folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise VaefastError(
            f"--diffusers {folder}: no config.json; expected a folder written "
            "by AutoencoderKL.save_pretrained"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise VaefastError(f"{config_path}: not readable JSON ({first_line(e)})") from None
    cls = config.get("_class_name") if isinstance(config, dict) else None
    if cls == "AutoencoderTiny":
        raise VaefastError(
            f"--diffusers {folder}: an AutoencoderTiny (TAESD) encodes to one "
            "latent with no posterior, so sigma is undefined and there is no "
            "(mu, logvar) to export; export the AutoencoderKL it distils "
            "instead, or wrap it as --module FILE.py:FUNCTION returning "
            "(mu, logvar)"
        )
    if cls != "AutoencoderKL":
        raise VaefastError(
            f"--diffusers {folder}: config.json describes {cls or 'no class'}, not an AutoencoderKL"
        )
    weights = folder / DIFFUSERS_WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" ({', '.join(pickled)} is a pickle, which vaefast never loads)" if pickled else ""
        raise VaefastError(f"--diffusers {folder}: no {DIFFUSERS_WEIGHTS}{hint}")
    require("diffusers", "--diffusers")
    from diffusers import AutoencoderKL

    try:
        with _quiet():
            # low_cpu_mem_usage=False: what diffusers falls back to without `accelerate`,
            # said here so it does not print a notice that asks the user for nothing
            model = AutoencoderKL.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False
            )
    except Exception as e:
        raise VaefastError(
            f"--diffusers {folder}: cannot load the AutoencoderKL "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None
    return model.eval(), weights


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


def load_eager(exported_dir: str | os.PathLike):
    """Rebuild the eager PyTorch VAE of a vaefast-trained export from its fp32 ONNX
    weights (for benchmarks), so the shipped models can be compared with eager PyTorch
    without shipping the run folder."""
    import onnx
    import torch
    from onnx import numpy_helper

    from vaefast.model import build

    meta = manifest.read_model_json(exported_dir)
    config = meta.get("architecture") or (
        {"arch": "mlp", **{k: meta[k] for k in ("input_dim", "hidden_dim", "latent_dim")}}
        if "hidden_dim" in meta
        else {}
    )
    if "module" in config or not config:
        raise VaefastError(
            f"{exported_dir}: not a vaefast-trained model; rebuild the eager "
            "model from your own module"
        )
    model = build(config)
    state = {}
    for name in variants_mod.model_files("fp32"):
        graph = onnx.load(str(manifest.model_folder(exported_dir) / name)).graph
        for init in graph.initializer:
            key = re.sub(r"^(model|vae)\.", "", init.name)
            state[key] = torch.from_numpy(numpy_helper.to_array(init).copy())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items() if k in expected} != expected:
        raise VaefastError(f"{exported_dir}: ONNX weights do not match model.json sizes")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval()


def _model_json(
    input_shape,
    probe: Probe,
    image_shape,
    pixel_scale: float,
    label_names,
    decoder_output: str,
    input_range,
    output_range,
    unbounded: bool,
    latent_scaling,
    training,
    architecture,
    weights_sha: str,
    variant_names: Sequence[str],
) -> dict[str, Any]:
    shape, latent = list(input_shape), list(probe.latent_shape)
    names = ["fp32", *variant_names]
    display = display_shape(input_shape, image_shape)
    dynamic = probe.multiple is not None
    x_dims = ["batch", shape[0], "height", "width"] if dynamic else ["batch", *shape]
    z_dims = (
        ["batch", latent[0], "height / multiple", "width / multiple"]
        if dynamic
        else ["batch", *latent]
    )
    meta = {
        "format": FORMAT,
        "input_shape": shape,
        "input_dim": int(np.prod(shape)),
        "latent_shape": latent,
        "latent_dim": int(np.prod(latent)),
        "input_layout": "NCHW" if len(shape) == 3 else "flat",
        "image_shape": list(display) if display else None,
        "size": {
            "dynamic": dynamic,
            "multiple": probe.multiple,
            "note": probe.why,
            "example": shape[1:] if len(shape) == 3 else None,
        },
        "pixel_scale": float(pixel_scale),
        "input_range": list(input_range),
        "output_range": list(output_range),
        "output_unbounded": unbounded,
        "pixel_scaling": "the ONNX encoder takes x in input_range and the decoder returns "
        "x_hat in output_range, as the model does; vaefast.runtime maps "
        "uint8 pixels (divided by pixel_scale) or floats in [0, 1] into "
        "input_range, and decoded images back to [0, 1]"
        + (" (clipped: the decoder is not bounded)" if unbounded else ""),
        "decoder_output": decoder_output,
        "decoder_note": "x_hat is in output_range"
        + (
            " (a sigmoid of the decoder's logits, added in the graph)"
            if decoder_output == "logits"
            else ""
        ),
        "latent_scaling": latent_scaling,
        "label_names": label_names,
        "encoder": {"inputs": {"x": x_dims}, "outputs": {"mu": z_dims, "logvar": z_dims}},
        "decoder": {"inputs": {"z": z_dims}, "outputs": {"x_hat": x_dims}},
        "variants": {n: dict(zip(variants_mod.PARTS, variants_mod.model_files(n))) for n in names},
        "opset": OPSET,
        "architecture": architecture,
        "training": training,
        "weights_sha256": weights_sha,
        "versions": package_versions("torch", "onnx", "onnxruntime"),
    }
    if architecture and "hidden_dim" in architecture:  # read by older vaefast versions
        meta["hidden_dim"] = architecture["hidden_dim"]
    return meta


def _export_verified(
    enc, dec, x, folder: Path, meta: dict, probe: Probe, known: dict, seed, steps, tolerance
) -> dict[str, Any]:
    """Both halves exported to fp32 ONNX in ``folder`` (with model.json), and their
    verification (``_verify_fp32``). TorchScript's exporter first: its trace takes ~1 s
    where torch.export's takes ~5 s a half. Where it fails, or its graph disagrees with
    eager beyond ``tolerance`` anywhere the verification looks (every batch and size
    checked), torch.export's (dynamo), verified the same way; the report's ``exporter``
    says which made the files, and ``exporter_fallback`` why TorchScript's did not."""
    dynamic_size = probe.multiple is not None
    fallback = None
    for exporter in EXPORTERS:
        try:
            _export_onnx(enc, dec, x, folder, meta, dynamic_size, exporter, known)
            manifest.write_model_json(folder, meta)
            fp32 = _verify_fp32(enc, dec, folder, x.numpy(), seed, probe, steps)
        except VaefastError:
            raise
        except Exception as e:
            why = f"{type(e).__name__}: {first_line(e)[:200]}"
            if exporter == EXPORTERS[-1]:  # e.g. a graph whose batch the model's code fixed
                raise VaefastError(
                    f"the exported model fails in ONNX Runtime ({why}); before it, {fallback}"
                ) from None
            fallback = f"{exporter}: {why}"
            continue
        if fp32["max_abs"] <= tolerance or exporter == EXPORTERS[-1]:
            return fp32 | {"exporter": exporter, "exporter_fallback": fallback}
        fallback = f"{exporter}: max abs error {fp32['max_abs']:.3g} over {tolerance:g}"
    raise AssertionError("unreachable: the last exporter returns or raises")


def _export_onnx(
    enc, dec, x, folder: Path, meta: dict, dynamic_size: bool, exporter: str, known: dict
) -> None:
    import torch

    # a Normal's argument checks are data-dependent branches torch.export cannot trace
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        _export_halves(enc, dec, x, folder, meta, dynamic_size, exporter, known)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def _export_halves(
    enc, dec, x, folder: Path, meta: dict, dynamic_size: bool, exporter: str, known: dict
) -> None:
    import onnx
    import torch
    from torch.export import Dim

    props = {f"vaefast.{k}": json.dumps(v) for k, v in meta.items() if k != "weights_sha256"}
    props[runtime.SHA_KEY] = meta["weights_sha256"]
    axes = {0: Dim("batch", min=1)}
    if dynamic_size:  # the exporter infers the size constraints the convolutions need
        axes |= {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    x = x[:EXPORT_ROWS]  # the batch axis is free: a few rows trace what all would
    with torch.no_grad():
        z = enc(x)[0]
    for module, name, ins, outs, example in (
        (enc, "encoder", ["x"], ["mu", "logvar"], x),
        (dec, "decoder", ["z"], ["x_hat"], z),
    ):
        dynamic_shapes = {ins[0]: axes if example.ndim == 4 else {0: axes[0]}}
        if exporter == "torchscript":
            proto = _traced_to_onnx(module, example, ins, outs, list(dynamic_shapes[ins[0]]))
        else:
            try:
                proto = _to_onnx(
                    module,
                    example,
                    ins,
                    outs,
                    dynamic_shapes,
                    name not in known.get("batch_branches", ()),
                ).model_proto
            except Exception as e:
                raise _exporter_error(e, module, example, dynamic_shapes) from None
        proto.doc_string = f"vaefast {name}: {ins[0]} -> {', '.join(outs)}"
        onnx.helper.set_model_props(proto, props)
        path = folder / f"{name}.onnx"
        onnx.save_model(proto, str(path), save_as_external_data=False)
        onnx.checker.check_model(str(path), full_check=True)


def _traced_to_onnx(module, example, ins, outs, dynamic: list[int]):
    """TorchScript's exporter (a trace at the example) with the axes ``dynamic`` of the
    input (and the same axes of every output) left free."""
    import io

    import onnx
    import torch

    # one batch for all; each tensor's own height and width (a latent's are the image's / m)
    axes = {n: {a: "batch" if a == 0 else f"{n}_{a}" for a in dynamic} for n in ins + outs}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=ins,
            output_names=outs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def _to_onnx(module, example, ins, outs, dynamic_shapes, named_batch: bool = True):
    """torch.onnx.export (dynamo) with a dynamic batch axis. A model whose Python code
    branches on the batch size (diffusers' upsampler calls ``.contiguous()`` from batch
    64 on) makes torch.export refuse an unbounded named axis; the axis is then left for
    the exporter to bound (``Dim.DYNAMIC``) — at once where that is known
    (``named_batch`` False): such branches are no-ops in ONNX, and the verification runs
    batches up to the runtime's own through the result."""
    import torch
    from torch.export import Dim

    def run(shapes):
        return torch.onnx.export(
            module,
            (example,),
            input_names=ins,
            output_names=outs,
            dynamic_shapes=shapes,
            dynamo=True,
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )

    with _torchlib_registry_once():
        if named_batch:
            try:
                return run(dynamic_shapes)
            except Exception as e:
                text = "\n".join(str(x) for x in (e, e.__cause__, e.__context__) if x)
                if "Constraints violated (batch)" not in text:
                    raise
        return run({k: v | {0: Dim.DYNAMIC} for k, v in dynamic_shapes.items()})


_REGISTRIES: dict[int, Any] = {}


@contextlib.contextmanager
def _torchlib_registry_once():
    """Within it, torch.onnx.export's table of ONNX functions is built once per process.
    The exporter rebuilds it on every call, and onnxscript re-parses the source of ~500
    functions to do so: ~1 s of each half's export here (an in-process export of the
    official MLP VAE took 2.3 s of CPU sharing the table, 4.3 s rebuilding it). The table
    depends only on the opset, and nothing of ours adds to it (no custom translations are
    passed), so one per opset serves every call. Where the exporter's internals differ
    (another torch), it is left as it is."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
        build = original.__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def once(klass, opset_version=_registration._constants.TORCHLIB_OPSET):
        if opset_version not in _REGISTRIES:
            _REGISTRIES[opset_version] = build(klass, opset_version)
        return _REGISTRIES[opset_version]

    cls.from_torchlib = classmethod(once)
    try:
        yield
    finally:
        cls.from_torchlib = original


def _random_inputs(rng: np.random.Generator, b: int, shape, input_range) -> np.ndarray:
    """``b`` uniform random inputs of ``shape`` in the model's own pixel range."""
    lo, hi = input_range
    return rng.random((b, *shape), dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)


def _eager(enc, dec):
    """(mu, logvar, x_hat) of the eager halves on x, decoding z where given (else mu)."""
    import torch

    def run(x: np.ndarray, z: np.ndarray | None):
        with torch.no_grad():
            mu, logvar = (t.numpy() for t in enc(torch.from_numpy(x)))
            return mu, logvar, dec(torch.from_numpy(mu if z is None else z)).numpy()

    return run


def _checked_batches(batch_rows: int) -> list[int]:
    """The random batch sizes the fp32 verification runs for a model whose runtime batch
    (``ExportedVAE.batch_rows``, at most 4,096) is ``batch_rows``: 1, 7, 256 where the
    runtime's batch is larger, and the runtime's batch itself — what users run by
    default, and no larger (a conv model's 4,096 rows would cost more than its export)."""
    return sorted({b for b in CHECK_BATCHES if b <= 7 or b < batch_rows} | {batch_rows})


def _runtime_batch(call: Callable[[int], Any], memory_rows: int) -> int:
    """The runtime's default batch (recorded in model.json, and verified): the memory
    rule's ``memory_rows``, but no more rows than ONNX Runtime runs in ~CALL_SECONDS
    here (timed on a second call of up to 64 rows), and at least the largest of
    CHECK_BATCHES, in powers of two."""
    import time

    b = min(memory_rows, 64)
    call(b)  # the first run allocates
    t0 = time.perf_counter()
    call(b)
    rows = CALL_SECONDS * b / max(time.perf_counter() - t0, 1e-9)
    floor = max(CHECK_BATCHES[-1], 2 ** int(math.log2(max(rows, 1))))
    return int(min(memory_rows, floor))


def _eager_on_random(enc, dec, input_shape, input_range) -> Callable[[int], Any]:
    """``call(b)``: the eager halves on ``b`` random inputs (what memory fitting runs)."""
    run, rng = _eager(enc, dec), np.random.default_rng(0)
    return lambda b: run(_random_inputs(rng, b, input_shape, input_range), None)


def _eager_fits_one_row(enc, dec, input_shape, input_range, steps) -> None:
    """Refuse, before anything is exported, a budget that even one row of eager
    verification exceeds: a failure in seconds, not after the export."""
    call = _eager_on_random(enc, dec, input_shape, input_range)
    memory.fit_batch(call, 1, steps.budget, "eager verification")


def _verify_fp32(
    enc,
    dec,
    folder: Path,
    X: np.ndarray,
    seed: int,
    probe: Probe,
    steps: memory.Steps,
) -> dict[str, Any]:
    """ONNX Runtime against eager on the example, on random batches up to the runtime's
    default batch (``_checked_batches``), and (fully convolutional models) at a second
    image size; inputs in the model's own range, fed to the bare sessions. Each side
    runs in batches fitted to the memory budget (``vaefast.memory.fit_batch``), each
    recorded with its peak RSS; ONNX Runtime's cost per row, measured first, decides the
    runtime's batch and so the random batches checked."""
    vae = runtime.load(folder, providers=CPU, spin=False)
    rng = np.random.default_rng(seed)

    def inputs(b: int, shape=None) -> np.ndarray:
        return _random_inputs(rng, b, shape or vae.input_shape, vae.input_range)

    # bare sessions without ONNX Runtime's arena: what a batch needs is what is measured,
    # and it is given back after each run
    options = engines.session_options(spin=False, arena=False)
    encoder, decoder = (
        engines.cpu_session(folder / name, options)
        for name in variants_mod.model_files(variants_mod.REFERENCE)
    )

    def onnx(x: np.ndarray, z: np.ndarray):
        mu, logvar = encoder.run(None, {"x": x})
        return mu, logvar, decoder.run(None, {"z": z})[0]

    def onnx_on_random(b: int):
        return onnx(inputs(b), rng.standard_normal((b, *vae.latent_shape), np.float32))

    cost = memory.row_cost(onnx_on_random, steps.budget, "ONNX Runtime verification")
    batch_rows = _runtime_batch(onnx_on_random, runtime.default_batch_rows(cost[1]))
    cases = [("test_split", np.ascontiguousarray(X, np.float32), None)]
    for b in _checked_batches(batch_rows):
        cases.append(
            (str(b), inputs(b), rng.standard_normal((b, *vae.latent_shape), dtype=np.float32))
        )
    if probe.second_size is not None:
        cases.append(("second_size", inputs(2, (vae.input_shape[0], *probe.second_size)), None))
    most = max(len(x) for _, x, _ in cases[1:])  # the example's eager outputs are the probe's
    eager = _eager(enc, dec)

    def sliced(run, x, z, batch):  # (mu, logvar, x_hat) of x (and z) in slices
        parts = [
            run(x[s : s + batch], None if z is None else z[s : s + batch])
            for s in range(0, len(x), batch)
        ]
        return [np.concatenate(p) for p in zip(*parts)]

    memory.trim()
    batch = memory.fit_batch(
        _eager_on_random(enc, dec, vae.input_shape, vae.input_range),
        most,
        steps.budget,
        "eager verification",
    )[0]
    with steps.measure("eager verify", batch=batch):
        theirs = [list(probe.outputs)] + [sliced(eager, x, z, batch) for _, x, z in cases[1:]]
    memory.trim()
    batch_onnx, per_row = memory.fit_batch(
        onnx_on_random, most, steps.budget, "ONNX Runtime verification", cost=cost
    )
    with steps.measure("onnx verify", batch=batch_onnx):
        ours = [
            sliced(onnx, x, theirs[k][0] if z is None else z, batch_onnx)
            for k, (_, x, z) in enumerate(cases)
        ]
    result = _fp32_errors(cases, theirs, ours, probe)
    return result | {
        "providers": vae.providers,
        "batch_rows": batch_onnx,
        "onnx_bytes_per_row": per_row,
        "runtime_batch_rows": batch_rows,
    }


def _fp32_errors(cases, theirs, ours, probe: Probe) -> dict[str, Any]:
    """The fp32 verification's figures: each case's max errors of mu, logvar and x_hat
    (ONNX Runtime ``ours`` against eager ``theirs``), kNN@10 overlap on the example,
    and the worst over all cases."""
    result: dict[str, Any] = {"random": {}}
    for (name, x, _), (mu, logvar, x_hat), (o_mu, o_logvar, o_x_hat) in zip(cases, theirs, ours):
        errors = {
            "n": len(x),
            "mu": max_errors(o_mu, mu),
            "logvar": max_errors(o_logvar, logvar),
            "x_hat": max_errors(o_x_hat, x_hat),
        }
        if name == "test_split":
            flat = (len(x), -1)
            errors["knn10_overlap"] = knn_overlap(
                o_mu.reshape(flat), mu.reshape(flat), min(10, len(x) - 1)
            )
            result["test_split"] = errors
        elif name == "second_size":
            result["second_size"] = errors | {"size": list(probe.second_size)}
        else:
            result["random"][name] = errors
    parts = [result["test_split"], *result["random"].values()] + (
        [result["second_size"]] if "second_size" in result else []
    )
    worst = max(p[k]["max_abs"] for p in parts for k in ("mu", "logvar", "x_hat"))
    worst_rel = max(p[k]["max_rel"] for p in parts for k in ("mu", "logvar", "x_hat"))
    return result | {"max_abs": worst, "max_rel": worst_rel}


def format_report(report: dict[str, Any]) -> str:
    """A short Markdown table of an export report's agreement figures."""
    fp32 = report["fp32"]
    rows = [
        "| variant | agreement against | figures |",
        "|---|---|---|",
        f"| fp32 | eager PyTorch | max abs error {fp32['max_abs']:.2e} "
        f"(tolerance {report['tolerance']:g}), max rel {fp32['max_rel']:.2e}, "
        f"kNN@10 overlap {fp32['test_split']['knn10_overlap']:.3f} |",
    ]
    labels = {n: n for n in variants_mod.VARIANTS if n != variants_mod.REFERENCE} | {
        e.report_key: e.label for e in engines.ENGINES.values() if e.report_key
    }
    for name, label in labels.items():
        if name in report:
            r = report[name]
            label = f"{label} {r['precision']}" if r.get("precision") else label
            rows.append(
                f"| {label} | ONNX fp32 | μ rel error {r['mu_rel_error']:.2e}, kNN@10 "
                f"overlap {r['knn10_overlap_vs_fp32']:.3f}, reconstruction PSNR "
                f"{r['recon_psnr_db_vs_fp32']:.1f} dB |"
            )
    return "\n".join(rows)

"""Torch-free batched inference on exported VAEs with ONNX Runtime (CPU, CUDA, TensorRT).

>>> from vaefast import runtime
>>> vae = runtime.load("mnist5k-z20")
>>> mu, logvar = vae.encode(images)   # uint8 pixels or floats in [0, 1], [N, *input_shape]
>>> x_hat = vae.decode(mu)             # [N, *input_shape] in [0, 1]

Inputs may come in any layout ``vaefast.layout.arrange`` accepts: flat or image-shaped
for MLP models; [N, C, H, W], channels-last [N, H, W, C] (or [N, H, W] when grey) for
convolutional ones; a fully convolutional export takes any height and width that are
multiples of its ``size_multiple``. Latents are [N, *latent_shape]: [N, Z] or spatial
[N, C, h, w].

The ONNX files compute what the model computes, in the model's own pixel ranges
(model.json ``input_range`` / ``output_range``, e.g. [-1, 1]); this wrapper maps uint8
or [0, 1] images into the input range and decoded images back to [0, 1] for display.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from vaefast.runtime import engines
from vaefast.errors import BadRows, VaefastError
from vaefast.layout import arrange, check_pixels, describe, input_shape_for, to_display
from vaefast.runtime.manifest import (
    image_display_shape,
    input_shape,
    latent_shape,
    model_folder,
    read_model_json,
    size_multiple,
)
from vaefast.runtime.variants import model_files
from vaefast.runtime.variants import variant as variant_entry

SHA_KEY = "vaefast.weights_sha256"
DEFAULT_BATCH = 4096
BATCH_BYTES = 256 << 20  # default batches: at most this much memory for what a row creates


def default_batch_rows(bytes_per_row: int | None) -> int:
    """Rows per ONNX Runtime call by default: 4,096, fewer where the export measured that
    a row's activations are large (attention over 64x64 latents: ~20 MB a row)."""
    if not bytes_per_row:
        return DEFAULT_BATCH
    return int(min(DEFAULT_BATCH, max(1, BATCH_BYTES // bytes_per_row)))


class ExportedVAE:
    """An exported encoder/decoder pair; all methods take and return numpy arrays."""

    def __init__(
        self,
        folder: Path,
        meta: dict[str, Any],
        encoder,
        decoder,
        variant: str,
        engine: str = "onnxruntime",
    ):
        self.folder, self.meta, self.variant, self.engine = folder, meta, variant, engine
        #: the engine's precision where it chooses one (OpenVINO's bf16/f32), else None
        self.precision = engines.session_precision(encoder)
        self.encoder_session, self.decoder_session = encoder, decoder
        self.input_shape = input_shape(meta)
        self.input_dim = int(np.prod(self.input_shape))
        self.latent_shape = latent_shape(meta)
        self.latent_dim = int(np.prod(self.latent_shape))
        self.pixel_scale = float(meta["pixel_scale"])
        self.input_range = tuple(float(v) for v in meta.get("input_range") or (0.0, 1.0))
        self.output_range = tuple(float(v) for v in meta.get("output_range") or (0.0, 1.0))
        self.size_multiple = size_multiple(meta)
        shape = meta.get("image_shape")
        self.image_shape = tuple(shape) if shape else None
        self.label_names = meta.get("label_names")
        #: rows per ONNX Runtime call by default: the export's (sized by compute and memory,
        #: and verified), else ``default_batch_rows``
        measured = meta.get("memory") or {}
        self.batch_rows = int(
            measured.get("batch_rows") or default_batch_rows(measured.get("onnx_bytes_per_row"))
        )
        self.on_gpu = engines.on_gpu(encoder)
        self._encoder_run, self._decoder_run = encoder.run, decoder.run
        # the fast path of encode/decode: CPU, [0, 1] inputs, outputs already in [0, 1]
        self._straight = not self.on_gpu and self.input_range == (0.0, 1.0)
        self._may_overflow = variant_entry(variant).may_overflow
        self._display_is_output = self.output_range == (0.0, 1.0) and not meta.get(
            "output_unbounded"
        )
        self._device_outputs: dict[tuple, Any] = {}

    def __repr__(self) -> str:
        size = f", size_multiple={self.size_multiple}" if self.size_multiple else ""
        return (
            f"ExportedVAE({str(self.folder)!r}, variant={self.variant!r}, "
            f"input_shape={list(self.input_shape)}, latent_shape="
            f"{list(self.latent_shape)}{size}, providers={self.providers})"
        )

    @property
    def providers(self) -> list[str]:
        """Providers actually in use by the encoder session, first = preferred."""
        return self.encoder_session.get_providers()

    # --- inputs ---------------------------------------------------------------------------

    @property
    def display_shape(self) -> tuple[int, ...]:
        """How one input image displays: (H, W) grey or (H, W, C)."""
        return image_display_shape(self.meta)

    def check_inputs(self, X: np.ndarray) -> np.ndarray:
        """Validate inputs' layout and lay them out as [N, *input_shape] (uint8 pixels or
        floats; for a fully convolutional model, of any size it takes)."""
        if isinstance(X, np.ndarray) and X.shape[1:] == self.input_shape and X.dtype.kind in "uif":
            return X  # the common case, kept cheap: batch-1 calls take ~20 µs in all
        X = X if isinstance(X, np.ndarray) else np.asarray(X)
        if X.dtype.kind not in "uif":
            raise VaefastError(f"inputs have dtype {X.dtype}; pass uint8 pixels or floats")
        if X.ndim < 2:
            raise VaefastError(
                f"inputs have shape {list(X.shape)}; this model expects "
                f"{describe(self.input_shape)}"
            )
        target = input_shape_for(X.shape[1:], self.input_shape, self.size_multiple)
        return arrange(X, target, self.image_shape)

    def latent_shape_for(self, sample_shape) -> tuple[int, ...]:
        """The latent shape of one input of ``sample_shape`` (as the model takes it)."""
        sample_shape = tuple(sample_shape)
        if not self.size_multiple or sample_shape == self.input_shape:
            return self.latent_shape
        m = self.size_multiple
        return (self.latent_shape[0], sample_shape[1] // m, sample_shape[2] // m)

    def output_shape_for(self, z_shape) -> tuple[int, ...]:
        """The decoded shape of one latent of ``z_shape``."""
        z_shape = tuple(z_shape)
        if not self.size_multiple or z_shape == self.latent_shape:
            return self.input_shape
        m = self.size_multiple
        return (self.input_shape[0], z_shape[1] * m, z_shape[2] * m)

    def images(self, X: np.ndarray) -> np.ndarray:
        """Inputs or decoder outputs as displayable images in [0, 1]: [N, H, W] (grey) or
        [N, H, W, C] (colour)."""
        X = self.check_inputs(X)
        if X.dtype.kind in "ui":
            X = X / np.float32(self.pixel_scale)
        shape = X.shape[1:]
        return to_display(
            np.asarray(X, np.float32),
            shape,
            self.image_shape if shape == self.input_shape else None,
        )

    def _to_model(self, chunk: np.ndarray) -> np.ndarray:
        """uint8 pixels or [0, 1] floats (checked by the one pixel rule) -> float32 in the
        model's input range."""
        check_pixels(chunk, self.pixel_scale)
        lo, hi = self.input_range
        if chunk.dtype.kind in "ui":
            x = np.multiply(chunk, np.float32((hi - lo) / self.pixel_scale), dtype=np.float32)
        elif (lo, hi) == (0.0, 1.0):
            return np.ascontiguousarray(chunk, dtype=np.float32)
        else:
            x = np.multiply(chunk, np.float32(hi - lo), dtype=np.float32)
        if lo:
            x += np.float32(lo)
        return x

    def _to_display(self, x_hat: np.ndarray) -> np.ndarray:
        """Decoder outputs in the model's output range -> [0, 1] (clipped, as diffusers'
        image processor does; a no-op for a sigmoid decoder)."""
        lo, hi = self.output_range
        if (lo, hi) == (0.0, 1.0) and not self.meta.get("output_unbounded"):
            return x_hat
        if lo:
            x_hat -= np.float32(lo)
        if hi - lo != 1.0:
            x_hat *= np.float32(1.0 / (hi - lo))
        return np.clip(x_hat, 0.0, 1.0, out=x_hat)

    # --- running --------------------------------------------------------------------------

    def _run(self, session, name: str, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        if not self.on_gpu:
            return session.run(outputs, {name: x})
        # IO binding: the input is copied to the device once, outputs stay in device
        # buffers reused across same-sized batches and are copied back once.
        import onnxruntime as ort

        binding = session.io_binding()
        binding.bind_cpu_input(name, x)
        for out in outputs:
            shape = (
                self.latent_shape_for(x.shape[1:])
                if out != "x_hat"
                else self.output_shape_for(x.shape[1:])
            )
            key = (id(session), out, x.shape)
            if key not in self._device_outputs:
                self._device_outputs[key] = ort.OrtValue.ortvalue_from_shape_and_type(
                    [x.shape[0], *shape], np.float32, "cuda", 0
                )
            binding.bind_ortvalue_output(out, self._device_outputs[key])
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def encode(self, X: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means and log-variances, each [N, *latent_shape] float32, in batches
        of ``batch_size`` (default ``batch_rows``).

        Inputs are uint8 pixels or floats in [0, 1] (the one pixel rule; a NaN, inf or
        out-of-range value is an error naming its row), mapped into the model's input
        range. NaN or inf in the outputs from finite inputs are an error too. One batch of
        float32 in the model's layout (and a [0, 1] model) goes straight to ONNX Runtime
        with one check, the pixel rule as one reduction; its outputs are checked only
        where finite inputs can overflow (fp16, GPUs): fp32 and int8 exports were verified
        finite on batches of 1 to 4,096 in-range inputs, and right after ONNX Runtime runs,
        any numpy call costs ~3 µs here (measured in RESULTS.md).
        """
        batch_size = self.batch_rows if batch_size is None else batch_size
        if (
            self._straight
            and type(X) is np.ndarray
            and X.dtype == np.float32
            and X.shape[1:] == self.input_shape
            and X.flags.c_contiguous
            and 0 < len(X) <= batch_size
        ):
            if not X.view(np.uint32).max() <= _ONE_BITS:  # NaN, inf, < 0 or > 1 (or -0.0)
                check_pixels(X, self.pixel_scale)  # names the row (and lets -0.0 pass)
            mu, logvar = self._encoder_run(self._ENCODER_OUT, {"x": X})
            if self._may_overflow and not _finite_dots(mu, logvar):
                _check_finite((mu, logvar))
            return mu, logvar
        X = self.check_inputs(X)
        n = X.shape[0]
        if n <= _check_batch(batch_size):  # one batch: hand ONNX Runtime's arrays back as-is
            x = self._to_model(X)
            mu, logvar = self._run(self.encoder_session, "x", x, self._ENCODER_OUT)
            if not _finite_dots(mu, logvar):
                _check_finite((mu, logvar))
            return mu, logvar
        shape = self.latent_shape_for(X.shape[1:])
        mu = np.empty((n, *shape), np.float32)
        logvar = np.empty((n, *shape), np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            try:
                x = self._to_model(X[start:stop])
            except BadRows as e:  # the row counted from the start of X
                raise e.shifted(start) from None
            m, lv = self._run(self.encoder_session, "x", x, self._ENCODER_OUT)
            if not math.isfinite(m.sum() + lv.sum()):
                _check_finite((m, lv))
            mu[start:stop], logvar[start:stop] = m, lv
        return mu, logvar

    _ENCODER_OUT = ["mu", "logvar"]

    def check_latents(self, Z: np.ndarray) -> np.ndarray:
        """Latents as [N, *latent_shape] (flat [N, Z] rows are reshaped; a fully
        convolutional model takes [N, C, h, w] of any size it can decode)."""
        Z = np.asarray(Z)
        shape = tuple(Z.shape[1:])
        ok = Z.dtype.kind in "iuf" and Z.ndim >= 2
        if ok and shape != self.latent_shape:
            if shape == (self.latent_dim,):
                Z = Z.reshape(Z.shape[0], *self.latent_shape)
            elif not (
                self.size_multiple
                and len(shape) == 3
                and shape[0] == self.latent_shape[0]
                and min(shape[1:]) >= 1
            ):
                ok = False
        if not ok:
            raise VaefastError(
                f"latents have shape {list(Z.shape)} and dtype {Z.dtype}; "
                f"this model expects float {describe(self.latent_shape)}"
            )
        return Z

    def decode(self, Z: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Decoded images [N, *input_shape] float32 in [0, 1] (mapped from the model's
        output range) from latents [N, *latent_shape], in batches of ``batch_size``
        (default ``batch_rows``)."""
        batch_size = self.batch_rows if batch_size is None else batch_size
        if (
            self._straight
            and type(Z) is np.ndarray
            and Z.dtype == np.float32
            and Z.shape[1:] == self.latent_shape
            and Z.flags.c_contiguous
            and 0 < len(Z) <= batch_size
            and self._display_is_output
        ):
            if not _finite_dots(Z):
                raise VaefastError("latents contain NaN or inf")
            return self._decoder_run(["x_hat"], {"z": Z})[0]  # straight through, as encode
        Z = self.check_latents(Z)
        n = Z.shape[0]
        out = np.empty((n, *self.output_shape_for(Z.shape[1:])), np.float32)
        for start in range(0, n, _check_batch(batch_size)):
            stop = min(start + batch_size, n)
            z = np.ascontiguousarray(Z[start:stop], dtype=np.float32)
            if not _all_finite(z):  # N x Z values: cheap
                raise VaefastError("latents contain NaN or inf")
            out[start:stop] = self._to_display(
                self._run(self.decoder_session, "z", z, ["x_hat"])[0]
            )
        return out

    def sample_z(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` draws of z ~ N(0, I), [n, *latent_shape] float32, from numpy's seeded
        generator."""
        if n < 1:
            raise VaefastError(f"number of samples must be >= 1, got {n}")
        return np.random.default_rng(seed).standard_normal((n, *self.latent_shape), np.float32)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Decoded z ~ N(0, I): [n, *input_shape]; mu and sigma are bypassed entirely."""
        return self.decode(self.sample_z(n, seed))

    def reconstruct(self, X: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """decode(mu(X)): the deterministic reconstruction, [N, *input_shape] float32."""
        return self.decode(self.encode(X, batch_size)[0], batch_size)


_ONE_BITS = int(np.float32(1.0).view(np.uint32))  # [0, 1] floats are the uint32s <= this


def _finite_dots(*arrays: np.ndarray) -> bool:
    """True when the arrays hold no NaN or inf: for a few hundred values a Python sum of
    their list (cheaper than a numpy call right after ONNX Runtime has run), else a dot
    product of each with itself (False also on overflow, where the exact check runs)."""
    total = 0.0
    for a in arrays:
        flat = a.reshape(-1)
        total += sum(flat.tolist()) if flat.size <= 512 else float(flat @ flat)
    return math.isfinite(total)


def _check_finite(outputs) -> None:
    """Raise when an output holds NaN or inf (the inputs passed the pixel rule, so they
    were finite)."""
    if not all(_all_finite(o) for o in outputs):
        raise VaefastError("the model produced NaN or inf from finite inputs (overflow?)")


def _all_finite(x: np.ndarray) -> bool:
    """True when x has no NaN or inf: one summing pass, no temporary array (a NaN or inf
    makes the sum non-finite; only then, or on overflow, look element by element)."""
    return bool(np.isfinite(x.sum(dtype=np.float64))) or bool(np.isfinite(x).all())


def _check_batch(batch_size: int) -> int:
    if batch_size < 1:
        raise VaefastError(f"batch size must be >= 1, got {batch_size}")
    return batch_size


def _check_io(
    session, path: Path, meta: dict, inputs: dict[str, tuple], outputs: dict[str, tuple]
) -> None:
    for kind, declared, actual in (
        ("inputs", inputs, session.get_inputs()),
        ("outputs", outputs, session.get_outputs()),
    ):
        got = {a.name: a.shape for a in actual}
        if set(got) != set(declared):
            raise VaefastError(
                f"{path}: {kind} {sorted(got)} do not match model.json "
                f"{sorted(declared)}; wrong model file?"
            )
        for name, shape in declared.items():
            dims = got[name][1:]  # a dynamic height or width is a name, not a number
            if len(dims) != len(shape) or any(
                isinstance(g, int) and g != d for g, d in zip(dims, shape)
            ):
                raise VaefastError(
                    f"{path}: {name} has shape {got[name]}, model.json "
                    f"declares [batch, {', '.join(map(str, shape))}]; wrong "
                    "model file?"
                )
    sha = session.get_modelmeta().custom_metadata_map.get(SHA_KEY)
    if sha != meta["weights_sha256"]:
        raise VaefastError(
            f"{path}: belongs to another model (weights sha256 {sha} vs "
            f"{meta['weights_sha256']} in model.json); export again"
        )


def load(
    exported_dir: str | os.PathLike,
    providers: str | list[str] = engines.DEFAULT_PROVIDERS,
    threads: int | None = None,
    variant: str = "fp32",
    spin: bool = True,
    precision: str | None = None,
) -> ExportedVAE:
    """Open an exported model folder (or a shipped model by name) for inference.

    ``providers``: ``auto`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``cpu``,
    ``cuda``, ``tensorrt``, or an explicit ONNX Runtime provider list — or ``openvino``
    (OpenVINO on the CPU, ``precision`` bf16 where the CPU has AMX or AVX512_BF16, else
    f32; see ``vaefast.runtime.engines``). Asking for a GPU provider and getting CPU is an error,
    never a silent fallback. ``threads`` sets the engine's threads; ``spin=False`` stops
    idle ONNX Runtime threads spinning (use it when torch or Numba share the process).
    """
    folder = model_folder(exported_dir)
    meta = read_model_json(folder)
    enc_file, dec_file = model_files(variant)  # an unknown name: the table's names listed
    if "variants" in meta and variant not in meta["variants"]:
        raise VaefastError(
            f"{folder} was exported without the {variant} variant (it has "
            f"{', '.join(meta['variants'])}); export it again with "
            f"--variants {variant}"
        )
    engine = engines.engine_for(providers)
    chain = engine.chain(providers)
    D, Z = input_shape(meta), latent_shape(meta)
    sessions = []
    for name, ins, outs in (
        (enc_file, {"x": D}, {"mu": Z, "logvar": Z}),
        (dec_file, {"z": Z}, {"x_hat": D}),
    ):
        session = engine.open(folder / name, chain, threads, spin, precision)
        _check_io(session, folder / name, meta, ins, outs)
        engine.check(session, providers)
        sessions.append(session)
    return ExportedVAE(folder, meta, sessions[0], sessions[1], variant, engine.name)

"""What an export writes beside its ONNX files: ``model.json``'s facts, each variant and
engine measured against fp32 (``export_report.json``), and the report as a short table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vaefast.runtime import engines, memory
from vaefast import runtime
from vaefast.runtime import variants as variants_mod
from vaefast.layout import display_shape
from vaefast.versions import package_versions
from vaefast.export.adapt import Probe, _unit
from vaefast.export.trace import OPSET

FORMAT = "vaefast-exported/1"


CPU = engines.ENGINES["onnxruntime"].on_cpu


# calibrate 8 rows a run where ONNX Runtime fits >= this many rows in the budget, else 1:
# the calibrator's graph keeps more alive than inference does (ranges are merged exactly,
# so the batch changes the time, never the model)
CALIBRATE_8_FROM = 64  # the reference: ONNX Runtime on the CPU


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

    def against_fp32(name: str, providers: str, opened: runtime.ExportedVAE | None = None):
        if not fp32:
            fp32.extend(
                variants_mod.reference_outputs(
                    runtime.load(folder, providers=CPU, spin=False), images, rows
                )
            )
            memory.trim(collect=True)
        return variants_mod.agreement(
            tuple(fp32),
            lambda: opened or runtime.load(folder, providers=providers, variant=name, spin=False),
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
            probe, faster = {}, None
            if len(engine.precisions()) > 1:
                probe, faster = _precision_probe(folder, engine, images)
            with steps.measure(f"{engine.report_key} agreement", batch=rows):
                report[engine.report_key] = against_fp32(
                    variants_mod.REFERENCE, engine.on_cpu, faster
                ) | ({engines.PROBE_KEY: probe} if probe else {})
    return report


PROBE_SECONDS = 0.02  # a probe's batch: about this long at one row's measured cost


def _precision_probe(
    folder: Path, engine: engines.Engine, images: np.ndarray
) -> tuple[dict[str, Any], runtime.ExportedVAE]:
    """Each of ``engine``'s precisions timed on this CPU (encode then decode, the best of 3
    calls after a warm one, one batch for all sized from one row's cost): a flag alone
    picks the slower on some CPUs, so the faster, measured, becomes the default here.
    Returns the figures and the faster's open model (its agreement is measured next)."""
    import time

    def timed(vae, x) -> float:
        t0 = time.perf_counter()
        vae.decode(vae.encode(x)[0])
        return time.perf_counter() - t0

    seconds: dict[str, float] = {}
    opened: dict[str, runtime.ExportedVAE] = {}
    batch = None
    for precision in engine.precisions():
        vae = runtime.load(folder, providers=engine.on_cpu, precision=precision, spin=False)
        if batch is None:
            timed(vae, images[:1])  # warm
            batch = int(np.clip(PROBE_SECONDS / max(timed(vae, images[:1]), 1e-6), 1, len(images)))
        timed(vae, images[:batch])  # warm at the batch
        seconds[precision] = min(timed(vae, images[:batch]) for _ in range(3))
        opened[precision] = vae
    faster = min(seconds, key=seconds.get)
    probe = {"cpu": engines.cpu_id(), "batch": batch, "seconds": seconds, "faster": faster}
    return probe, opened[faster]


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

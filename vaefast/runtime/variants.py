"""Export variants: one table from variant name to its file suffix, writer and agreement
check, used by export, the runtime, the report and the CLI.

Writers take the fp32 ONNX file (and, for a calibrated variant, real inputs of that
model) and return the variant's ModelProto and facts worth recording (ONNX and ONNX
Runtime tools only, no torch); checks compare the variant with fp32 on real inputs.
Adding a variant is one writer plus one entry in ``VARIANTS``, its properties as fields
(calibrated, GPU-only, may overflow, agreement target) that callers read.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast.errors import VaefastError, first_line

REFERENCE = "fp32"  # the variant every other is measured against
INT8_MIN_OVERLAP = 0.9  # kNN@10 overlap the int8 encoder must keep against fp32
# Left in fp32 by static int8: ONNX Runtime's CPU has no int8 kernel it fuses a quantized
# ConvTranspose into, so quantize/dequantize pairs around it only add work (the shipped conv
# decoder: 18.3 ms at 256 rows quantized, 16.0 ms left in fp32, fp32 throughout 17.2 ms)
STATIC_FLOAT_OPS = frozenset({"ConvTranspose"})
# Quantized in QDQ form beside the quantizer's own list: ONNX Runtime fuses a dequantize ->
# op -> quantize chain of these into its int8 kernels, as its QOperator form writes them (a
# small AutoencoderKL at 128², batch 1: 0.81-0.82x QOperator's speed without, 0.93-0.96x with)
QDQ_EXTRA_OPS = frozenset({"Add", "Mul", "Sigmoid"})
# onnx.reference implements QuantizeLinear/DequantizeLinear from opset 19 on; 19 only widens
# the types of the operators that changed from 18 (float8), so QDQ files declare it
QDQ_OPSET = 19


@contextlib.contextmanager
def _calibration_without_arena():
    """ONNX Runtime's calibrator runs its augmented graph (every tensor reduced to its
    min and max, optimizations off) with the default memory arena, whose power-of-two
    growth held ~6.3 GB per row of an SD-VAE decoder at 256x256; without the arena the
    same calibration peaked at 3.7 GB for one row (RESULTS.md). The calibrator has no
    option for it, so its session factory is replaced for the call and restored."""
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate

    base = getattr(calibrate, "CalibraterBase", None)
    original = getattr(base, "create_inference_session", None)
    if original is None:  # another onnxruntime layout: its default session
        yield
        return

    def create_inference_session(self):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        self.infer_session = ort.InferenceSession(
            self.augmented_model_path, sess_options=options, providers=self.execution_providers
        )

    base.create_inference_session = create_inference_session
    try:
        yield
    finally:
        base.create_inference_session = original


@contextlib.contextmanager
def _quiet():
    """The quantizer's advice (root logger) and ONNX Runtime's shape-merge warnings are not
    the user's business; both restored after."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)


def _write_int8(
    src: Path, dst: Path, inputs: np.ndarray | None = None, rows: int = 8
) -> tuple[Any, dict]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # 7-bit weights: on x86 without VNNI, MLAS's u8s8 kernels then cannot saturate and
    # run faster (10.6 vs 14.0 ms at batch 4096 on an AVX2 EPYC), same kNN overlap.
    # MatMul/Gemm only: ONNX Runtime's ConvInteger made the conv encoder 2-6x slower than
    # fp32 (Zen 4, batch 64-8192), so convolutions stay fp32.
    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            reduce_range=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    return onnx.load(str(dst)), {}


def _write_int8_static(
    src: Path, dst: Path, inputs: np.ndarray | None = None, rows: int = 8
) -> tuple[Any, dict]:
    """Static int8 (ONNX Runtime's ``quantize_static``) in QDQ form — standard
    QuantizeLinear/DequantizeLinear pairs around fp32 operators, which ONNX Runtime fuses
    into int8 kernels and OpenVINO and ``onnx.reference`` run as written: per-channel int8
    weights, uint8 activations whose ranges are calibrated on ``inputs`` (real inputs of
    this model, in its own range), convolutions included, ``STATIC_FLOAT_OPS`` left in fp32.
    Where ONNX Runtime's quantizer cannot write a graph in QDQ form, ONNX Runtime's own
    QOperator form (which only it runs) is written, and the reason recorded.

    Calibration streams: ``rows`` inputs a batch, and the MinMax ranges of each batch's
    every intermediate tensor are merged into running minima and maxima before the next
    batch runs (ONNX Runtime's calibrator otherwise keeps all of every batch's tensors:
    the SD-VAE's were OOM-killed at 24 GB). The ranges, so the model, are the same."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vaefast.runtime.engines import cpu_session

    name = cpu_session(src).get_inputs()[0].name
    step = max(1, min(rows, len(inputs)))

    class Batches(CalibrationDataReader):
        """The calibration inputs, ``step`` rows a batch; ``set_range`` (ONNX Runtime's
        strided calibration) hands out a few batches at a time."""

        def __init__(self):
            self.starts = list(range(0, len(inputs), step))
            self.set_range(0, len(self.starts))

        def __len__(self):
            return len(self.starts)

        def set_range(self, start_index: int, end_index: int):
            self.batches = iter(
                [{name: inputs[i : i + step]} for i in self.starts[start_index:end_index]]
            )

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet(), _calibration_without_arena():
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8-static.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        failed: dict[str, str] = {}
        for fmt, ops in (
            (QuantFormat.QDQ, set(QDQRegistry) | QDQ_EXTRA_OPS),
            (QuantFormat.QOperator, set(QLinearOpsRegistry)),
        ):
            try:
                quantize_static(
                    str(pre),
                    str(out),
                    Batches(),
                    quant_format=fmt,
                    op_types_to_quantize=sorted(ops - STATIC_FLOAT_OPS),
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8,
                    # one batch's tensors at a time, ranges merged (its
                    # CalibMaxIntermediateOutputs clears batches without
                    # merging their ranges in onnxruntime 1.32)
                    extra_options={"CalibStridedMinMax": 1},
                )
                break
            except Exception as e:  # e.g. "shared mode is not supported for weight yet"
                failed[fmt.name] = first_line(e, 200)
        if len(failed) == 2:
            raise VaefastError(f"static int8 quantization failed for {src.name}: {failed}")
        proto = onnx.load(str(out))
    if fmt == QuantFormat.QDQ:
        for imported in proto.opset_import:
            if imported.domain == "":
                imported.version = max(imported.version, QDQ_OPSET)
    left = sorted({n.op_type for n in proto.graph.node} & STATIC_FLOAT_OPS)
    facts = {"format": fmt.name, "calibration_rows": len(inputs), "left_in_fp32": left}
    return proto, facts | ({"qdq_failed": failed["QDQ"]} if failed else {})


def _write_fp16(
    src: Path, dst: Path, inputs: np.ndarray | None = None, rows: int = 8
) -> tuple[Any, dict]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = onnx.load(str(src))
    del source.graph.value_info[:]  # the exporter's fp32 types would contradict fp16 ones
    proto = convert_float_to_float16(source, keep_io_types=True)
    _sort_nodes(proto.graph)  # the converter appends its input casts at the end
    return proto, {}


def _drop_unused_domains(proto) -> None:
    """Keep only the opset imports the graph's nodes use (ONNX Runtime's quantizer declares
    every domain it knows), so each engine sees only what the file needs."""
    used = {n.domain for n in proto.graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def _sort_nodes(graph) -> None:
    """Reorder a graph's nodes topologically, as onnx.checker requires."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise VaefastError("fp16 conversion produced a graph with a cycle")
        for node in ready:
            known.update(node.output)
            ordered.append(node)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


@dataclass(frozen=True)
class Variant:
    """A precision an exported model can be written in. Callers read these properties,
    never the variant's name."""

    suffix: str  # encoder{suffix}.onnx, decoder{suffix}.onnx
    write: Callable[..., tuple[Any, dict]] | None  # (fp32 file, dst, inputs) -> proto, facts
    min_overlap: float | None  # kNN@10 overlap with fp32 the variant should keep
    purpose: str
    calibrated: bool = False  # the writer needs real inputs of each model
    gpu_only: bool = False  # made for GPUs: slower than fp32 on CPUs, not offered there
    may_overflow: bool = False  # finite inputs can give inf (fp16): outputs are checked
    # a row's outputs are a function of that row alone, whatever else is in its call; not
    # so for dynamic int8, whose activation scales come from the whole batch (stores record it)
    batch_independent: bool = True


VARIANTS: dict[str, Variant] = {
    "fp32": Variant("", None, None, "the reference; verified against eager PyTorch"),
    "int8": Variant(
        ".int8",
        _write_int8,
        INT8_MIN_OVERLAP,
        "dynamic int8 quantization (7-bit weights) of MatMul/Gemm: fast MLPs on CPUs; "
        "activation scales per call, so a row's latent depends on its batch",
        batch_independent=False,
    ),
    "int8-static": Variant(
        ".int8-static",
        _write_int8_static,
        INT8_MIN_OVERLAP,
        "static int8 quantization, calibrated on real inputs, "
        "convolutions included: fast conv models on CPUs",
        calibrated=True,
    ),
    "fp16": Variant(
        ".fp16",
        _write_fp16,
        0.95,
        "fp16 weights, fp32 inputs/outputs, for GPUs",
        gpu_only=True,
        may_overflow=True,
    ),
}


def variant(name: str) -> Variant:
    """The registry entry of a variant, or a clear error."""
    if name not in VARIANTS:
        raise VaefastError(f"unknown variant {name!r}; use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


PARTS = ("encoder", "decoder")  # the two ONNX models of every export, in model_files' order


def model_files(name: str = "fp32") -> tuple[str, str]:
    """File names of the encoder and decoder (``PARTS``) of a variant."""
    s = variant(name).suffix
    return f"encoder{s}.onnx", f"decoder{s}.onnx"


def write(
    folder: Path, name: str, calibration: dict[str, np.ndarray] | None = None, rows: int = 8
) -> dict[str, Any]:
    """Write variant ``name`` of the fp32 models in ``folder``, checked, metadata kept;
    ``calibration`` gives a calibrated variant real inputs of each model ({"encoder": x
    in the model's range, "decoder": z}), run ``rows`` at a time (what fits the memory
    budget). Returns the writers' facts by model."""
    import onnx

    entry = variant(name)
    if entry.calibrated and not calibration:
        raise VaefastError(f"variant {name} needs calibration inputs")
    facts = {}
    for part, src, dst in zip(PARTS, model_files(REFERENCE), model_files(name)):
        proto, facts[part] = entry.write(
            folder / src, folder / dst, (calibration or {}).get(part), rows
        )
        proto.doc_string = f"vaefast {dst}: {name} variant of {src}"
        _drop_unused_domains(proto)
        props = {p.key: p.value for p in onnx.load(str(folder / src)).metadata_props}
        props["vaefast.variant"] = json.dumps(name)
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, props)
        onnx.save_model(proto, str(folder / dst), save_as_external_data=False)
        onnx.checker.check_model(str(folder / dst), full_check=True)
    return {k: v for k, v in facts.items() if v}


def parse_names(text: str | None) -> tuple[str, ...]:
    """``"int8,int8-static"`` -> the variant names, each checked against the table."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    for n in names:
        variant(n)
    return names


def reference_outputs(reference, X: np.ndarray, rows: int | None = None) -> tuple:
    """(μ, reconstruction of μ) of the fp32 reference (an ExportedVAE) on inputs X, ``rows``
    at a time: what every candidate's ``agreement`` is measured against."""
    mu32 = reference.encode(X, rows)[0]
    return mu32, reference.decode(mu32, rows)


def agreement(
    reference: tuple[np.ndarray, np.ndarray],
    load_candidate: Callable[[], Any],
    X: np.ndarray,
    name: str,
    rows: int | None = None,
) -> dict[str, Any]:
    """Figures of a candidate (an ExportedVAE of variant ``name``, opened by
    ``load_candidate``) against the fp32 reference's ``reference_outputs`` on inputs X,
    run ``rows`` at a time: μ errors, kNN@10 overlap of μ, reconstruction PSNR."""
    from vaefast.metrics import knn_overlap, max_errors, psnr

    mu32, recon32 = reference
    candidate = load_candidate()
    mu = candidate.encode(X, rows)[0]
    recon = candidate.decode(mu32, rows)
    overlap = knn_overlap(mu.reshape(len(mu), -1), mu32.reshape(len(mu), -1), 10)
    wanted = variant(name).min_overlap
    errors = max_errors(mu, mu32)
    return {
        "mu_rel_error": errors["max_rel"],
        "mu_max_abs_error": errors["max_abs"],
        "knn10_overlap_vs_fp32": overlap,
        "meets_target": bool(wanted is None or overlap >= wanted),
        "recon_psnr_db_vs_fp32": psnr(recon, recon32),
        "evaluated_on": f"{len(X)} rows, providers {candidate.providers}",
    } | ({"precision": candidate.precision} if candidate.precision else {})

"""Export variants: one table from variant name to its file suffix, writer and agreement
check, used by export, the runtime, the report and the CLI.

Writers take the fp32 ONNX file and write the variant next to it (ONNX and ONNX
Runtime tools only, no torch); checks compare the variant with fp32 on real inputs.
Adding a variant is one writer plus one entry in ``VARIANTS``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast.errors import VaefastError

INT8_MIN_OVERLAP = 0.9  # kNN@10 overlap the int8 encoder must keep against fp32


def _write_int8(src: Path, dst: Path) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
    # 7-bit weights: on x86 without VNNI, MLAS's u8s8 kernels then cannot saturate and
    # run faster (10.6 vs 14.0 ms at batch 4096 on an AVX2 EPYC), same kNN overlap.
    # MatMul/Gemm only: ONNX Runtime's ConvInteger made the conv encoder 2-6x slower than
    # fp32 (Zen 4, batch 64-8192), so convolutions stay fp32.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, reduce_range=True,
                     op_types_to_quantize=["MatMul", "Gemm"])
    return onnx.load(str(dst))


def _write_fp16(src: Path, dst: Path) -> Any:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_nodes(proto.graph)  # the converter appends its input casts at the end
    return proto


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
    """A precision an exported model can be written in."""

    suffix: str  # encoder{suffix}.onnx, decoder{suffix}.onnx
    write: Callable[[Path, Path], Any] | None  # fp32 file -> variant ModelProto (None: fp32)
    min_overlap: float | None  # kNN@10 overlap with fp32 the variant should keep
    purpose: str


VARIANTS: dict[str, Variant] = {
    "fp32": Variant("", None, None, "the reference; verified against eager PyTorch"),
    "int8": Variant(".int8", _write_int8, INT8_MIN_OVERLAP,
                    "dynamic int8 quantization (7-bit weights) for fast CPU inference"),
    "fp16": Variant(".fp16", _write_fp16, 0.95, "fp16 weights, fp32 inputs/outputs, for GPUs"),
}


def variant(name: str) -> Variant:
    """The registry entry of a variant, or a clear error."""
    if name not in VARIANTS:
        raise VaefastError(f"unknown variant {name!r}; use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def model_files(name: str = "fp32") -> tuple[str, str]:
    """File names of the encoder and decoder of a variant."""
    s = variant(name).suffix
    return f"encoder{s}.onnx", f"decoder{s}.onnx"


def write(folder: Path, name: str) -> None:
    """Write variant ``name`` of the fp32 models in ``folder``, checked, metadata kept."""
    import onnx

    for src, dst in zip(model_files("fp32"), model_files(name)):
        proto = variant(name).write(folder / src, folder / dst)
        proto.doc_string = f"vaefast {dst}: {name} variant of {src}"
        props = {p.key: p.value for p in onnx.load(str(folder / src)).metadata_props}
        props["vaefast.variant"] = json.dumps(name)
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, props)
        onnx.save_model(proto, str(folder / dst), save_as_external_data=False)
        onnx.checker.check_model(str(folder / dst), full_check=True)


def agreement(reference, candidate, X: np.ndarray, name: str) -> dict[str, Any]:
    """Figures of ``candidate`` (an ExportedVAE of variant ``name``) against the fp32
    ``reference`` on inputs X: μ errors, kNN@10 overlap of μ, reconstruction PSNR."""
    from vaefast.metrics import knn_overlap, max_errors, psnr

    mu32 = reference.encode(X)[0]
    mu = candidate.encode(X)[0]
    overlap = knn_overlap(mu.reshape(len(mu), -1), mu32.reshape(len(mu), -1), 10)
    wanted = variant(name).min_overlap
    errors = max_errors(mu, mu32)
    return {"mu_rel_error": errors["max_rel"], "mu_max_abs_error": errors["max_abs"],
            "knn10_overlap_vs_fp32": overlap,
            "meets_target": bool(wanted is None or overlap >= wanted),
            "recon_psnr_db_vs_fp32": psnr(candidate.decode(mu32), reference.decode(mu32)),
            "evaluated_on": f"{len(X)} rows, providers {candidate.providers}"}

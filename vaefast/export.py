"""torch -> ONNX export of the encoder and decoder, verified against the eager model.

Writes into ``--out`` (built in a temporary folder, renamed only when verification passes):
``encoder.onnx``, ``decoder.onnx`` (fp32, dynamic batch, opset 18, self-contained),
optional ``*.int8.onnx`` (ONNX Runtime dynamic quantization) and ``*.fp16.onnx`` (for GPUs),
``model.json`` (the same facts sit in each ONNX file's metadata_props) and
``export_report.json`` (eager vs ONNX Runtime agreement).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vaefast import runtime
from vaefast._io import atomic_dir, check_new_output, write_json
from vaefast.errors import VaefastError
from vaefast.metrics import knn_overlap, max_errors, psnr
from vaefast.versions import package_versions

OPSET = 18
TOLERANCE = 1e-5  # fp32 max abs error allowed between eager and ONNX Runtime
INT8_MIN_OVERLAP = 0.9  # kNN@10 overlap the int8 encoder must keep against fp32
CHECK_BATCHES = (1, 7, 256, 4096)
FORMAT = "vaefast-exported/1"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export(run_dir: str | os.PathLike, out: str | os.PathLike, *, int8: bool = False,
           fp16: bool = False, force: bool = False, tolerance: float = TOLERANCE,
           seed: int = 0) -> dict[str, Any]:
    """Export a run folder's VAE to ONNX at ``out``, verify it, and return the report.

    Fails (VaefastError, nothing left at ``out``) when fp32 max abs error against eager
    PyTorch exceeds ``tolerance``. An int8 encoder whose kNN@10 overlap with fp32 falls
    below 0.9 is kept but flagged (``meets_target: false``, a warning on stderr).
    """
    from vaefast.train import WEIGHTS, load_run

    out = Path(out)
    check_new_output(out, force)
    model, config = load_run(run_dir)
    meta = _model_json(config, sha256_file(Path(run_dir) / WEIGHTS), int8, fp16)
    X_test = _test_inputs(config)
    with atomic_dir(out, force=force) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        _export_onnx(model, tmp, meta)
        write_json(tmp / runtime.MODEL_JSON, meta)
        report = {"tolerance": tolerance, "fp32": _verify_fp32(model, tmp, X_test, seed)}
        worst = report["fp32"]["max_abs"]
        if not worst <= tolerance:
            raise VaefastError(f"export failed verification: fp32 max abs error {worst:.3g} "
                               f"exceeds {tolerance:g}")
        reference = runtime.load(tmp, providers="cpu", spin=False)
        for variant, wanted in (("int8", int8), ("fp16", fp16)):
            if wanted:
                _write_variant(tmp, variant)
                report[variant] = _compare_variant(reference, tmp, variant, X_test)
        if int8 and not report["int8"]["meets_target"]:
            print(f"warning: int8 encoder keeps kNN@10 overlap "
                  f"{report['int8']['knn10_overlap_vs_fp32']:.3f} < {INT8_MIN_OVERLAP}; "
                  "prefer the fp32 models for this one", file=sys.stderr)
        write_json(tmp / "export_report.json", report)
    return report


def load_eager(exported_dir: str | os.PathLike):
    """Rebuild the eager PyTorch VAE from an export's fp32 ONNX weights (for benchmarks).

    The initializers carry the trained weights under their module names, so the shipped
    models can be compared with eager PyTorch without shipping the run folder.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from vaefast.model import VAE

    meta = runtime.read_model_json(exported_dir)
    model = VAE(meta["input_dim"], meta["hidden_dim"], meta["latent_dim"])
    state = {}
    for name in runtime.model_files("fp32"):
        graph = onnx.load(str(Path(exported_dir) / name)).graph
        for init in graph.initializer:
            state[init.name.removeprefix("vae.")] = torch.from_numpy(
                numpy_helper.to_array(init).copy())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items() if k in expected} != expected:
        raise VaefastError(f"{exported_dir}: ONNX weights do not match model.json sizes")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval()


def _model_json(config: dict, weights_sha: str, int8: bool, fp16: bool) -> dict[str, Any]:
    sizes = config["model"]
    variants = {"fp32": dict(zip(("encoder", "decoder"), runtime.model_files("fp32")))}
    for name, wanted in (("int8", int8), ("fp16", fp16)):
        if wanted:
            variants[name] = dict(zip(("encoder", "decoder"), runtime.model_files(name)))
    return {
        "format": FORMAT,
        "input_dim": sizes["input_dim"],
        "hidden_dim": sizes["hidden_dim"],
        "latent_dim": sizes["latent_dim"],
        "image_shape": config.get("image_shape"),
        "pixel_scale": config.get("pixel_scale", 255.0),
        "pixel_scaling": "integer inputs are divided by pixel_scale; float inputs are "
                         "taken as already in [0, 1]",
        "label_names": config.get("label_names"),
        "encoder": {"inputs": {"x": ["batch", sizes["input_dim"]]},
                    "outputs": {"mu": ["batch", sizes["latent_dim"]],
                                "logvar": ["batch", sizes["latent_dim"]]}},
        "decoder": {"inputs": {"z": ["batch", sizes["latent_dim"]]},
                    "outputs": {"x_hat": ["batch", sizes["input_dim"]]}},
        "variants": variants,
        "opset": OPSET,
        "training": {k: config.get(k) for k in ("data", "seed", "epochs", "batch_size", "lr",
                                                "n_train", "n_test")}
                    | {"final_test_loss": config["history"][-1]["test_loss"]},
        "weights_sha256": weights_sha,
        "versions": package_versions("torch", "onnx", "onnxruntime"),
    }


def _test_inputs(config: dict) -> np.ndarray:
    from vaefast import data

    try:
        return data.load(config["data"]).X_test
    except VaefastError as e:
        raise VaefastError(f"cannot load the run's data {config['data']!r} to verify the "
                           f"export ({e})") from None


def _export_onnx(model, folder: Path, meta: dict) -> None:
    import onnx
    import torch

    from vaefast.model import Decoder, Encoder

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1)
    props = {f"vaefast.{k}": json.dumps(v) for k, v in meta.items() if k != "weights_sha256"}
    props[runtime.SHA_KEY] = meta["weights_sha256"]
    for module, name, ins, outs, width in (
            (Encoder(model), "encoder", ["x"], ["mu", "logvar"], meta["input_dim"]),
            (Decoder(model), "decoder", ["z"], ["x_hat"], meta["latent_dim"])):
        example = torch.rand(4, width)
        program = torch.onnx.export(module.eval(), (example,), input_names=ins,
                                    output_names=outs, dynamic_shapes={ins[0]: {0: batch}},
                                    dynamo=True, opset_version=OPSET, external_data=False,
                                    verbose=False)
        proto = program.model_proto
        proto.doc_string = f"vaefast {name}: {ins[0]} -> {', '.join(outs)}"
        onnx.helper.set_model_props(proto, props)
        path = folder / f"{name}.onnx"
        onnx.save_model(proto, str(path), save_as_external_data=False)
        onnx.checker.check_model(str(path), full_check=True)


def _verify_fp32(model, folder: Path, X_test: np.ndarray, seed: int) -> dict[str, Any]:
    import torch

    vae = runtime.load(folder, providers="cpu", spin=False)
    rng = np.random.default_rng(seed)

    def compare(x: np.ndarray, z: np.ndarray | None = None):
        """Errors of ORT against eager on x (and on z, default: the eager μ of x)."""
        with torch.no_grad():
            mu, logvar = (t.numpy() for t in model.encode(torch.from_numpy(x)))
            z = mu if z is None else z
            x_hat = model.decode(torch.from_numpy(z)).numpy()
        o_mu, o_logvar = vae.encode(x)
        errors = {"n": len(x), "mu": max_errors(o_mu, mu),
                  "logvar": max_errors(o_logvar, logvar),
                  "x_hat": max_errors(vae.decode(z), x_hat)}
        return errors, mu, o_mu

    test, mu_eager, mu_onnx = compare(X_test)
    test["knn10_overlap"] = knn_overlap(mu_onnx, mu_eager, 10)
    random = {}
    for b in CHECK_BATCHES:
        x = rng.random((b, vae.input_dim), dtype=np.float32)
        z = rng.standard_normal((b, vae.latent_dim), dtype=np.float32)
        random[str(b)] = compare(x, z)[0]
    parts = [test, *random.values()]
    worst = max(p[k]["max_abs"] for p in parts for k in ("mu", "logvar", "x_hat"))
    worst_rel = max(p[k]["max_rel"] for p in parts for k in ("mu", "logvar", "x_hat"))
    return {"test_split": test, "random": random, "max_abs": worst, "max_rel": worst_rel,
            "providers": vae.providers}


def _write_variant(folder: Path, variant: str) -> None:
    import onnx

    for src, dst in zip(runtime.model_files("fp32"), runtime.model_files(variant)):
        if variant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)  # quantizer's pre-processing advice
            # 7-bit weights: on x86 without VNNI, MLAS's u8s8 kernels then cannot saturate
            # and run faster (10.6 vs 14.0 ms at batch 4096 here), with the same kNN overlap
            quantize_dynamic(str(folder / src), str(folder / dst), weight_type=QuantType.QInt8,
                             reduce_range=True)
            proto = onnx.load(str(folder / dst))
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(onnx.load(str(folder / src)), keep_io_types=True)
            _sort_nodes(proto.graph)  # the converter appends its input casts at the end
        proto.doc_string = f"vaefast {dst}: {variant} variant of {src}"
        props = {p.key: p.value for p in onnx.load(str(folder / src)).metadata_props}
        props["vaefast.variant"] = json.dumps(variant)
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, props)
        onnx.save_model(proto, str(folder / dst), save_as_external_data=False)
        onnx.checker.check_model(str(folder / dst), full_check=True)


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


def _compare_variant(reference: runtime.ExportedVAE, folder: Path, variant: str,
                     X_test: np.ndarray) -> dict[str, Any]:
    vae = runtime.load(folder, providers="cpu", variant=variant, spin=False)
    mu32 = reference.encode(X_test)[0]
    mu = vae.encode(X_test)[0]
    overlap = knn_overlap(mu, mu32, 10)
    return {"mu_rel_error": max_errors(mu, mu32)["max_rel"],
            "mu_max_abs_error": max_errors(mu, mu32)["max_abs"],
            "knn10_overlap_vs_fp32": overlap,
            "meets_target": bool(overlap >= INT8_MIN_OVERLAP) if variant == "int8" else True,
            "recon_psnr_db_vs_fp32": psnr(vae.decode(mu32), reference.decode(mu32)),
            "evaluated_on": f"{len(X_test)} test rows, providers {vae.providers}"}


def format_report(report: dict[str, Any]) -> str:
    """A short Markdown table of an export report's agreement figures."""
    fp32 = report["fp32"]
    rows = ["| variant | agreement against | figures |", "|---|---|---|",
            f"| fp32 | eager PyTorch | max abs error {fp32['max_abs']:.2e} "
            f"(tolerance {report['tolerance']:g}), max rel {fp32['max_rel']:.2e}, "
            f"kNN@10 overlap {fp32['test_split']['knn10_overlap']:.3f} |"]
    for variant in ("int8", "fp16"):
        if variant in report:
            r = report[variant]
            rows.append(f"| {variant} | ONNX fp32 | μ rel error {r['mu_rel_error']:.2e}, kNN@10 "
                        f"overlap {r['knn10_overlap_vs_fp32']:.3f}, reconstruction PSNR "
                        f"{r['recon_psnr_db_vs_fp32']:.1f} dB |")
    return "\n".join(rows)

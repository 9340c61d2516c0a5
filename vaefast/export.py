"""torch -> ONNX export of any VAE's encoder and decoder, verified against the eager model.

``export_vae(model, out, example=x)`` takes any ``torch.nn.Module`` with
``encode(x) -> (mu, logvar)`` (or a ``torch.distributions.Normal``) and
``decode(z) -> x_hat`` (probabilities or logits), or explicit ``encode``/``decode``
callables; ``export(run_dir, out)`` does the same for a ``vaefast train`` run folder and
``export_module("file.py:fn", ...)`` for a model defined in the user's own file.

Writes into ``out`` (built in a temporary folder, renamed only when verification
passes): ``encoder.onnx`` (``x`` [batch, *input_shape] -> ``mu``, ``logvar`` [batch, Z]),
``decoder.onnx`` (``z`` -> ``x_hat`` [batch, *input_shape] in [0, 1]), both fp32, dynamic
batch, opset 18, self-contained; the variants asked for (``vaefast.variants``);
``model.json`` (the same facts sit in each ONNX file's metadata_props) and
``export_report.json`` (eager vs ONNX Runtime agreement).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast import runtime, variants
from vaefast.atomic import atomic_dir, check_new_output, write_json
from vaefast.errors import VaefastError
from vaefast.layout import arrange, display_shape
from vaefast.metrics import knn_overlap, max_errors
from vaefast.versions import package_versions

OPSET = 18
TOLERANCE = 1e-5  # fp32 max abs error allowed between eager and ONNX Runtime
CHECK_BATCHES = (1, 7, 256, 4096)  # random batches checked (4096 only up to 4 M values)
CHECK_VALUES = 1 << 22
FORMAT = "vaefast-exported/1"
DECODER_OUTPUTS = ("probs", "logits")


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


def halves(model, encode: Callable | None, decode: Callable | None, input_shape,
            decoder_output: str):
    """(Encoder, Decoder) modules wrapping the user's model: the encoder returns
    (mu, logvar) whatever ``encode`` returns; the decoder returns [batch, *input_shape]
    probabilities."""
    import torch
    from torch import nn

    encode = encode or getattr(model, "encode", None)
    decode = decode or getattr(model, "decode", None)
    for name, fn in (("encode", encode), ("decode", decode)):
        if not callable(fn):
            raise VaefastError(f"the model has no {name} method; pass {name}=a function "
                               f"(e.g. {name}=model.my_{name})")
    if decoder_output not in DECODER_OUTPUTS:
        raise VaefastError(f"decoder_output must be probs or logits, got {decoder_output!r}")

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = encode(x)
            if isinstance(out, torch.distributions.Normal):
                return out.loc, 2.0 * torch.log(out.scale)
            return out[0], out[1]

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, z):
            x_hat = decode(z)
            if decoder_output == "logits":
                x_hat = torch.sigmoid(x_hat)
            return x_hat.reshape(x_hat.shape[0], *input_shape)

    return Encoder().eval(), Decoder().eval(), encode, decode


def _probe(encode, decode, x, input_shape, decoder_output: str) -> int:
    """Run the eager halves on the example; return Z or raise a one-line error."""
    import torch

    with torch.no_grad():
        try:
            first, second = encode(x), encode(x)
        except Exception as e:
            raise VaefastError(f"encode failed on the example batch {list(x.shape)}: "
                               f"{type(e).__name__}: {_first_line(e)}") from None
        if isinstance(first, torch.distributions.Normal):
            first, second = (first.loc, first.scale), (second.loc, second.scale)
        if not (isinstance(first, (tuple, list)) and len(first) == 2
                and all(isinstance(t, torch.Tensor) for t in first)):
            raise VaefastError(f"encode must return (mu, logvar) tensors or a "
                               f"torch.distributions.Normal, got {_kind(first)}")
        mu, logvar = first
        b = x.shape[0]
        if mu.ndim != 2 or mu.shape[0] != b or tuple(logvar.shape) != tuple(mu.shape):
            raise VaefastError(f"encode must return mu and logvar of shape [batch, Z]; got "
                               f"{list(mu.shape)} and {list(logvar.shape)} for a batch of {b}")
        if any(not torch.equal(a, c) for a, c in zip(first, second)):
            raise VaefastError("encode is random: two calls on the same batch differ; the "
                               "reparameterization (sampling z) must stay out of encode, "
                               "which should return the posterior's mean and log-variance")
        try:
            x_hat = decode(mu)
        except Exception as e:
            raise VaefastError(f"decode failed on z of shape {list(mu.shape)}: "
                               f"{type(e).__name__}: {_first_line(e)}") from None
        if not isinstance(x_hat, torch.Tensor):
            raise VaefastError(f"decode must return a tensor, got {_kind(x_hat)}")
        if x_hat.shape[0] != b or x_hat[0].numel() != int(np.prod(input_shape)):
            raise VaefastError(f"decode returned shape {list(x_hat.shape)}; expected "
                               f"[{b}, {', '.join(map(str, input_shape))}] like the input")
        if decoder_output == "probs" and (x_hat.min() < 0 or x_hat.max() > 1):
            raise VaefastError(f"decode returned values in [{float(x_hat.min()):.3g}, "
                               f"{float(x_hat.max()):.3g}], not probabilities; pass "
                               "decoder_output='logits' if it returns logits")
    return int(mu.shape[1])


def _kind(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(_kind(v) for v in value)})"
    return type(value).__name__


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _exporter_error(e: BaseException, module, example, dynamic_shapes) -> VaefastError:
    """A one-line error naming the op the exporter could not translate and where in the
    user's model it comes from (the module path and source line torch.export recorded)."""
    import torch

    text = "\n".join(str(x) for x in (e, e.__cause__, e.__context__) if x)
    found = re.search(r"target=torch\.ops\.(\w+)\.(\w+)", text) or \
        re.search(r"OpOverload\(op='(\w+)\.(\w+)'", text)
    if found is None:
        lines = [ln for ln in text.splitlines() if "Error" in ln or "error" in ln]
        return VaefastError(f"the ONNX exporter failed: {(lines or [_first_line(e)])[-1][:300]}")
    op = f"{found.group(1)}.{found.group(2)}"
    half = "encode" if isinstance(module, torch.nn.Module) and \
        type(module).__name__ == "Encoder" else "decode"
    where = f" in {half}"
    try:  # torch.export succeeded (the failure is in ONNX translation): find the node
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
        base = found.group(2).split("_")[-1]
        for node in program.graph.nodes:
            if node.op == "call_function" and base in str(node.target):
                op = f"{str(node.target).rsplit('.', 1)[0]} ({op})"
                stack = [v for k, v in (node.meta.get("nn_module_stack") or {}).items()
                         if v[0]]  # the wrapper itself has path ''
                if stack:
                    path, cls = stack[-1]
                    where += f", module {path} ({str(cls).rsplit('.', 1)[-1]})"
                break
    except Exception:
        pass
    return VaefastError(f"the ONNX exporter cannot handle op {op}{where}; replace it with "
                        "ONNX-exportable torch ops")


# --- export ------------------------------------------------------------------------------


def export_vae(model, out: str | os.PathLike, *, example, encode: Callable | None = None,
               decode: Callable | None = None, decoder_output: str = "probs",
               label_names: list[str] | None = None, int8: bool = False, fp16: bool = False,
               force: bool = False, tolerance: float = TOLERANCE, seed: int = 0,
               pixel_scale: float = 255.0, image_shape=None,
               training: dict[str, Any] | None = None, architecture: dict | None = None,
               weights_sha256: str | None = None) -> dict[str, Any]:
    """Export any PyTorch VAE to ONNX at ``out``, verify it, and return the report.

    ``example`` is a real batch [B, *input_shape] (torch tensor or numpy floats in
    [0, 1]); the input shape, verification inputs and the kNN check come from it.
    A model left in training mode is exported in eval mode (a note on stderr; its
    mode is restored after). Fails with VaefastError, leaving nothing at ``out``,
    when fp32 max abs error against eager exceeds ``tolerance`` or the model cannot
    be exported. ``pixel_scale``: integer inputs are divided by it at run time.
    """
    import torch

    out = Path(out)
    check_new_output(out, force)
    if not isinstance(model, torch.nn.Module):
        raise VaefastError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = torch.as_tensor(np.asarray(example, np.float32) if not isinstance(example, torch.Tensor)
                        else example).float()
    if x.ndim < 2 or x.shape[0] < 2:
        raise VaefastError(f"example must be a batch [B, *input_shape] with B >= 2, got shape "
                           f"{list(x.shape)}")
    input_shape = tuple(int(s) for s in x.shape[1:])
    was_training = model.training
    if was_training:
        print("note: the model was in training mode; exporting it in eval mode (BatchNorm "
              "running statistics, no dropout), as inference runs it", file=sys.stderr)
    model.eval()
    try:
        enc, dec, encode, decode = halves(model, encode, decode, input_shape, decoder_output)
        latent_dim = _probe(encode, decode, x, input_shape, decoder_output)
        meta = _model_json(input_shape, latent_dim, image_shape, pixel_scale, label_names,
                           decoder_output, training, architecture,
                           weights_sha256 or sha256_state(model), int8, fp16)
        with atomic_dir(out, force=force) as tmp, _quiet():
            _export_onnx(enc, dec, x, tmp, meta)
            write_json(tmp / runtime.MODEL_JSON, meta)
            report = {"tolerance": tolerance,
                      "fp32": _verify_fp32(enc, dec, tmp, x.numpy(), seed)}
            worst = report["fp32"]["max_abs"]
            if not worst <= tolerance:
                raise VaefastError(f"export failed verification: fp32 max abs error "
                                   f"{worst:.3g} exceeds {tolerance:g}")
            reference = runtime.load(tmp, providers="cpu", spin=False)
            for name, wanted in (("int8", int8), ("fp16", fp16)):
                if wanted:
                    variants.write(tmp, name)
                    candidate = runtime.load(tmp, providers="cpu", variant=name, spin=False)
                    report[name] = variants.agreement(reference, candidate, x.numpy(), name)
                    if not report[name]["meets_target"]:
                        print(f"warning: the {name} encoder keeps kNN@10 overlap "
                              f"{report[name]['knn10_overlap_vs_fp32']:.3f} < "
                              f"{variants.variant(name).min_overlap}; prefer the fp32 "
                              "models for this one", file=sys.stderr)
            write_json(tmp / "export_report.json", report)
    finally:
        model.train(was_training)
    return report


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        yield


def export(run_dir: str | os.PathLike, out: str | os.PathLike, *, int8: bool = False,
           fp16: bool = False, force: bool = False, tolerance: float = TOLERANCE,
           seed: int = 0) -> dict[str, Any]:
    """Export a ``vaefast train`` run folder; verified on the run's test split."""
    from vaefast import data
    from vaefast.train import WEIGHTS, load_run

    check_new_output(Path(out), force)
    model, config = load_run(run_dir)
    try:
        ds = data.load(config["data"])
    except VaefastError as e:
        raise VaefastError(f"cannot load the run's data {config['data']!r} to verify the "
                           f"export ({e})") from None
    example = arrange(ds.X_test, model.input_shape, ds.image_shape)
    training = {k: config.get(k) for k in ("data", "seed", "epochs", "batch_size", "lr",
                                           "n_train", "n_test")} \
        | {"final_test_loss": config["history"][-1]["test_loss"]}
    return export_vae(model, out, example=example, label_names=config.get("label_names"),
                      int8=int8, fp16=fp16, force=force, tolerance=tolerance, seed=seed,
                      pixel_scale=config.get("pixel_scale", 255.0),
                      image_shape=config.get("image_shape"), training=training,
                      architecture=config["model"],
                      weights_sha256=sha256_file(Path(run_dir) / WEIGHTS))


def load_module(target: str, weights: str | os.PathLike | None = None):
    """Build a model from ``path/to/file.py:function`` and load ``weights`` into it:
    safetensors, or a PyTorch state dict read with ``weights_only=True`` (never a pickle
    of arbitrary objects)."""
    import torch

    path, sep, fn_name = target.rpartition(":")
    if not sep or not path.endswith(".py") or not fn_name.isidentifier():
        raise VaefastError(f"--module {target!r}: write it as path/to/file.py:function")
    if not Path(path).is_file():
        raise VaefastError(f"--module {target!r}: {path} not found")
    spec = importlib.util.spec_from_file_location(f"vaefast_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise VaefastError(f"{path}: failed to import ({type(e).__name__}: "
                           f"{_first_line(e)})") from None
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
        raise VaefastError(f"{path}: not a loadable safetensors file or state dict "
                           f"({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise VaefastError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        shapes = [k for k in set(got) & set(expected) if got[k] != expected[k]][:3]
        raise VaefastError(f"{path}: weights do not fit the model (missing {missing}, "
                           f"unexpected {extra}, other shapes {shapes})")
    return state


def export_module(target: str, out: str | os.PathLike, *, input_shape: tuple[int, ...],
                  weights: str | os.PathLike | None = None, data: str | None = None,
                  decoder_output: str = "probs", int8: bool = False, fp16: bool = False,
                  force: bool = False, seed: int = 0) -> dict[str, Any]:
    """Export the model ``file.py:function`` builds, verified on ``data``'s test split
    (laid out as ``input_shape``) or, without data, on seeded uniform random inputs."""
    from vaefast import data as data_mod

    check_new_output(Path(out), force)
    model = load_module(target, weights)
    input_shape = tuple(int(s) for s in input_shape)
    label_names, scale, image_shape, training = None, 255.0, None, None
    if data is not None:
        ds = data_mod.load(data)
        example = arrange(ds.X_test, input_shape, ds.image_shape)
        label_names, scale, image_shape = ds.label_names, ds.scale, ds.image_shape
        training = {"data": data}
    else:
        example = np.random.default_rng(seed).random((256, *input_shape), dtype=np.float32)
    return export_vae(model, out, example=example, decoder_output=decoder_output,
                      label_names=label_names, int8=int8, fp16=fp16, force=force, seed=seed,
                      pixel_scale=scale, image_shape=image_shape, training=training,
                      architecture={"module": target})


def load_eager(exported_dir: str | os.PathLike):
    """Rebuild the eager PyTorch VAE of a vaefast-trained export from its fp32 ONNX
    weights (for benchmarks), so the shipped models can be compared with eager PyTorch
    without shipping the run folder."""
    import onnx
    import torch
    from onnx import numpy_helper

    from vaefast.model import build

    meta = runtime.read_model_json(exported_dir)
    config = meta.get("architecture") or ({"arch": "mlp", **{k: meta[k] for k in (
        "input_dim", "hidden_dim", "latent_dim")}} if "hidden_dim" in meta else {})
    if "module" in config or not config:
        raise VaefastError(f"{exported_dir}: not a vaefast-trained model; rebuild the eager "
                           "model from your own module")
    model = build(config)
    state = {}
    for name in variants.model_files("fp32"):
        graph = onnx.load(str(Path(exported_dir) / name)).graph
        for init in graph.initializer:
            key = re.sub(r"^(model|vae)\.", "", init.name)
            state[key] = torch.from_numpy(numpy_helper.to_array(init).copy())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items() if k in expected} != expected:
        raise VaefastError(f"{exported_dir}: ONNX weights do not match model.json sizes")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval()


def _model_json(input_shape, latent_dim: int, image_shape, pixel_scale: float, label_names,
                decoder_output: str, training, architecture, weights_sha: str, int8: bool,
                fp16: bool) -> dict[str, Any]:
    shape = list(input_shape)
    names = ["fp32"] + [n for n, wanted in (("int8", int8), ("fp16", fp16)) if wanted]
    display = display_shape(input_shape, image_shape)
    meta = {
        "format": FORMAT,
        "input_shape": shape,
        "input_dim": int(np.prod(shape)),
        "latent_dim": latent_dim,
        "input_layout": "NCHW" if len(shape) == 3 else "flat",
        "image_shape": list(display) if display else None,
        "pixel_scale": float(pixel_scale),
        "pixel_scaling": "integer inputs are divided by pixel_scale; float inputs are "
                         "taken as already in [0, 1]",
        "decoder_output": decoder_output,
        "decoder_note": "x_hat is in [0, 1]" + (" (a sigmoid of the decoder's logits, "
                                                "added in the graph)"
                                                if decoder_output == "logits" else ""),
        "label_names": label_names,
        "encoder": {"inputs": {"x": ["batch", *shape]},
                    "outputs": {"mu": ["batch", latent_dim], "logvar": ["batch", latent_dim]}},
        "decoder": {"inputs": {"z": ["batch", latent_dim]},
                    "outputs": {"x_hat": ["batch", *shape]}},
        "variants": {n: dict(zip(("encoder", "decoder"), variants.model_files(n)))
                     for n in names},
        "opset": OPSET,
        "architecture": architecture,
        "training": training,
        "weights_sha256": weights_sha,
        "versions": package_versions("torch", "onnx", "onnxruntime"),
    }
    if architecture and "hidden_dim" in architecture:  # read by older vaefast versions
        meta["hidden_dim"] = architecture["hidden_dim"]
    return meta


def _export_onnx(enc, dec, x, folder: Path, meta: dict) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    # a Normal's argument checks are data-dependent branches torch.export cannot trace
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        _export_halves(enc, dec, x, folder, meta, batch)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def _export_halves(enc, dec, x, folder: Path, meta: dict, batch) -> None:
    import onnx
    import torch

    props = {f"vaefast.{k}": json.dumps(v) for k, v in meta.items() if k != "weights_sha256"}
    props[runtime.SHA_KEY] = meta["weights_sha256"]
    z = torch.zeros(x.shape[0], meta["latent_dim"])
    for module, name, ins, outs, example in ((enc, "encoder", ["x"], ["mu", "logvar"], x),
                                             (dec, "decoder", ["z"], ["x_hat"], z)):
        try:
            program = torch.onnx.export(module, (example,), input_names=ins,
                                        output_names=outs, dynamic_shapes={ins[0]: {0: batch}},
                                        dynamo=True, opset_version=OPSET, external_data=False,
                                        verbose=False)
        except Exception as e:
            raise _exporter_error(e, module, example, {ins[0]: {0: batch}}) from None
        proto = program.model_proto
        proto.doc_string = f"vaefast {name}: {ins[0]} -> {', '.join(outs)}"
        onnx.helper.set_model_props(proto, props)
        path = folder / f"{name}.onnx"
        onnx.save_model(proto, str(path), save_as_external_data=False)
        onnx.checker.check_model(str(path), full_check=True)


def _verify_fp32(enc, dec, folder: Path, X: np.ndarray, seed: int) -> dict[str, Any]:
    import torch

    vae = runtime.load(folder, providers="cpu", spin=False)
    rng = np.random.default_rng(seed)

    def compare(x: np.ndarray, z: np.ndarray | None = None):
        """Errors of ORT against eager on x (and on z, default: the eager μ of x)."""
        with torch.no_grad():
            mu, logvar = (t.numpy() for t in enc(torch.from_numpy(x)))
            z = mu if z is None else z
            x_hat = dec(torch.from_numpy(z)).numpy()
        o_mu, o_logvar = vae.encode(x)
        errors = {"n": len(x), "mu": max_errors(o_mu, mu),
                  "logvar": max_errors(o_logvar, logvar),
                  "x_hat": max_errors(vae.decode(z), x_hat)}
        return errors, mu, o_mu

    example, mu_eager, mu_onnx = compare(np.ascontiguousarray(X, np.float32))
    example["knn10_overlap"] = knn_overlap(mu_onnx, mu_eager, min(10, len(X) - 1))
    random = {}
    for b in CHECK_BATCHES:
        if b > 256 and b * vae.input_dim > CHECK_VALUES:
            continue
        x = rng.random((b, *vae.input_shape), dtype=np.float32)
        z = rng.standard_normal((b, vae.latent_dim), dtype=np.float32)
        random[str(b)] = compare(x, z)[0]
    parts = [example, *random.values()]
    worst = max(p[k]["max_abs"] for p in parts for k in ("mu", "logvar", "x_hat"))
    worst_rel = max(p[k]["max_rel"] for p in parts for k in ("mu", "logvar", "x_hat"))
    return {"test_split": example, "random": random, "max_abs": worst, "max_rel": worst_rel,
            "providers": vae.providers}


def format_report(report: dict[str, Any]) -> str:
    """A short Markdown table of an export report's agreement figures."""
    fp32 = report["fp32"]
    rows = ["| variant | agreement against | figures |", "|---|---|---|",
            f"| fp32 | eager PyTorch | max abs error {fp32['max_abs']:.2e} "
            f"(tolerance {report['tolerance']:g}), max rel {fp32['max_rel']:.2e}, "
            f"kNN@10 overlap {fp32['test_split']['knn10_overlap']:.3f} |"]
    for name in variants.VARIANTS:
        if name != "fp32" and name in report:
            r = report[name]
            rows.append(f"| {name} | ONNX fp32 | μ rel error {r['mu_rel_error']:.2e}, kNN@10 "
                        f"overlap {r['knn10_overlap_vs_fp32']:.3f}, reconstruction PSNR "
                        f"{r['recon_psnr_db_vs_fp32']:.1f} dB |")
    return "\n".join(rows)

"""Tracing a model's halves to ONNX: TorchScript's exporter, or torch.export's (dynamo)
with a dynamic batch (and size) axis, its function table built once, its logs quiet; the
one-line error naming an op no exporter can translate."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

from vaefast import runtime
from vaefast.errors import VaefastError, first_line

OPSET = 18


EXPORTERS = ("torchscript", "dynamo")  # tried in this order (``_export_verified``)


EXPORT_ROWS = 8  # example rows the exporters trace


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

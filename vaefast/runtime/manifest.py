"""The files of an exported model folder, one owner for both: ``model.json`` (what the
model takes and gives: shapes, pixel ranges, sizes, variants, memory per row, the
weights' sha256) and ``export_report.json`` (how each variant and engine agrees with the
reference, and what each export step cost in memory). Written by ``vaefast.export``,
read here by everyone else, by these names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vaefast.atomic import read_json, write_json
from vaefast.errors import VaefastError
from vaefast.layout import display_shape
from vaefast.shipped import SHIPPED
from vaefast.shipped import folder as shipped_folder
from vaefast.runtime.variants import REFERENCE

MODEL_JSON = "model.json"
REPORT_JSON = "export_report.json"


def model_folder(model: str | os.PathLike) -> Path:
    """The exported model folder ``model`` names: a folder that exists, or else the name
    of a shipped model (``vaefast.shipped.SHIPPED``)."""
    path = Path(model)
    if path.is_dir():
        return path
    if str(model) in SHIPPED:
        return shipped_folder(str(model))
    raise VaefastError(
        f"exported model folder {model} not found; give an exported folder (create one "
        f"with `vaefast export`) or a shipped model: {', '.join(SHIPPED)}"
    )


def read_model_json(model: str | os.PathLike) -> dict[str, Any]:
    """Read and check an exported model's model.json (a folder or a shipped name)."""
    folder = model_folder(model)
    if not (folder / MODEL_JSON).is_file():
        raise VaefastError(f"{folder} has no {MODEL_JSON}; is it a vaefast export?")
    meta = read_json(folder / MODEL_JSON)
    missing = {"input_dim", "latent_dim", "pixel_scale", "weights_sha256"} - set(meta)
    if missing:
        raise VaefastError(f"{folder / MODEL_JSON} lacks {sorted(missing)}; export again")
    return meta


def write_model_json(folder: Path, meta: dict[str, Any]) -> None:
    write_json(folder / MODEL_JSON, meta)


def read_report(model: str | os.PathLike) -> dict[str, Any]:
    """An exported model's export_report.json ({} when there is none)."""
    path = model_folder(model) / REPORT_JSON
    return read_json(path) if path.is_file() else {}


def write_report(folder: Path, report: dict[str, Any]) -> None:
    write_json(folder / REPORT_JSON, report)


def agreement(
    report: dict[str, Any], variant: str = "fp32", engine_key: str | None = None
) -> tuple[str, dict[str, Any] | None]:
    """(name, figures) of how ``variant`` run by an engine recorded under ``engine_key``
    (None: ONNX Runtime) agrees with ONNX Runtime fp32; figures None where the report
    has none. An engine's own key holds its fp32 run."""
    name = engine_key if engine_key and variant == REFERENCE else variant
    return name, report.get(name)


def input_shape(meta: dict[str, Any]) -> tuple[int, ...]:
    """The sample shape an export's encoder takes (model.json ``input_shape``; flat
    ``[input_dim]`` for exports written before it existed)."""
    return tuple(int(s) for s in meta.get("input_shape") or [meta["input_dim"]])


def image_display_shape(meta: dict[str, Any]) -> tuple[int, ...]:
    """How one input of the model in ``meta`` displays: (H, W) grey or (H, W, C)."""
    return display_shape(input_shape(meta), meta.get("image_shape"))


def latent_shape(meta: dict[str, Any]) -> tuple[int, ...]:
    """The latent shape of one input at the export's example size (model.json
    ``latent_shape``; ``[latent_dim]`` for exports written before it existed)."""
    return tuple(int(s) for s in meta.get("latent_shape") or [meta["latent_dim"]])


def size_multiple(meta: dict[str, Any]) -> int | None:
    """For a fully convolutional export, the multiple its heights and widths must be
    (model.json ``size``); None for a fixed-size model."""
    size = meta.get("size") or {}
    return int(size["multiple"]) if size.get("dynamic") else None

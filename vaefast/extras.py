"""The optional parts of vaefast, one table (``EXTRAS``): which packages each extra of
``pip install 'vaefast[EXTRA]'`` brings, so that a command or option whose extra is
missing says so in one line before it does any work."""

from __future__ import annotations

import importlib.util

from vaefast.errors import VaefastError

TRAIN = ("torch", "onnx", "onnxscript", "safetensors")
EXTRAS = {  # extra -> the top-level modules it installs (pyproject.toml's lists)
    "train": TRAIN,
    "diffusers": ("diffusers", *TRAIN),
    "dask": ("dask", "distributed"),
    "parquet": ("pyarrow",),
    "openvino": ("openvino",),
    "explore": ("starlette", "uvicorn"),
    "notebook": ("starlette", "uvicorn", "anywidget", "pandas"),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Refuse ``what`` (a command or option, as the user wrote it) in one line naming
    the extra to install, when any of its modules is missing."""
    gone = missing(extra)
    if gone:
        raise VaefastError(f"{what} needs {', '.join(gone)}: pip install 'vaefast[{extra}]'")


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name; None when no extra does)."""
    top = (module or "").split(".")[0]
    return next((extra for extra, mods in EXTRAS.items() if top in mods), None)

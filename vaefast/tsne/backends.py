"""t-SNE kernel sets: the one place a second implementation (e.g. a GPU one) plugs in.

A backend is a module providing every name in ``CONTRACT`` with the signatures of the
``numba`` backend (``vaefast.tsne._kernels``), by phase: the affinities
(``vaefast.tsne.affinities``), the objective and optimizer (``objective``,
``optimizer``) and the placement of new points (``transform``). Nothing outside those
modules reads a kernel module; ``TSNE(backend=NAME)`` picks one. Adding a backend is one
module plus one entry in ``BACKENDS``; a test checks that every backend provides the
contract.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vaefast.errors import VaefastError

CONTRACT = {
    "affinities": (
        "MACHINE_EPSILON",
        "packed_size",
        "packed_start",
        "conditional_probabilities",
        "conditional_rows",
        "rows_from_packed",
        "joint_packed",
        "joint_packed_from_distances",
        "joint_packed_in_place",
        "joint_sparse_counts",
        "joint_sparse",
    ),
    "objective": ("gradient_workspace", "p_sums", "gradient"),
    "optimizer": ("descent_update",),
    "transform": ("repulsion_grid", "place_points", "place_points_from_distances"),
}
BACKENDS = {"numba": "vaefast.tsne._kernels"}  # name -> module of kernels
DEFAULT = "numba"


def kernels(name: str = DEFAULT) -> ModuleType:
    """The kernel module of backend ``name``."""
    if name not in BACKENDS:
        raise VaefastError(f"unknown t-SNE backend {name!r}; use one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])

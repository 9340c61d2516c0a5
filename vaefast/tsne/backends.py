"""t-SNE kernel sets: the one place a second implementation (e.g. a GPU one) plugs in.

A backend is a module of functions with the signatures of ``vaefast.tsne._kernels``:
``conditional_probabilities``, ``conditional_rows``, ``rows_from_packed``,
``joint_packed(_from_distances)``, ``joint_packed_in_place``, ``packed_size``,
``packed_start`` (affinities), ``gradient_workspace``, ``p_sums``, ``gradient`` (the
objective), ``descent_update`` (the optimizer) and
``place_points(_from_distances)`` (transform). Nothing outside those modules reads a
kernel module; ``TSNE(backend=NAME)`` picks one. Adding a backend is one module plus one
entry here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vaefast.errors import VaefastError

BACKENDS = {"numba": "vaefast.tsne._kernels"}  # name -> module of kernels
DEFAULT = "numba"


def kernels(name: str = DEFAULT) -> ModuleType:
    """The kernel module of backend ``name``."""
    if name not in BACKENDS:
        raise VaefastError(f"unknown t-SNE backend {name!r}; use one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])

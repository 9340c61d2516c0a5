"""The ``numba`` backend: the kernels of each phase, from the module of that phase —
``_affinity_kernels`` (``affinities``), ``_gradient_kernels`` (``objective``,
``optimizer``) and ``_placement_kernels`` (``transform``). It provides exactly
``vaefast.tsne.backends.CONTRACT``. Its kernels load precompiled where the package ships
code for this CPU (``vaefast.tsne.precompiled``)."""

from vaefast.tsne._affinity_kernels import (
    MACHINE_EPSILON,
    conditional_probabilities,
    conditional_rows,
    joint_packed,
    joint_packed_from_distances,
    joint_packed_in_place,
    joint_sparse,
    joint_sparse_counts,
    p_sums,
    packed_size,
    packed_start,
    rows_from_packed,
)
from vaefast.tsne import _affinity_kernels, _gradient_kernels, _placement_kernels, _simd, _vecmath
from vaefast.tsne._gradient_kernels import descent_update, gradient, gradient_workspace
from vaefast.tsne._placement_kernels import (
    place_points,
    place_points_from_distances,
    repulsion_grid,
)
from vaefast.tsne.precompiled import attach

# the shipped machine code of this CPU's level, where there is some (first runs skip Numba)
MODULES = [_vecmath, _simd, _affinity_kernels, _gradient_kernels, _placement_kernels]
LEVEL = attach(MODULES)

__all__ = [
    "MACHINE_EPSILON",
    "conditional_probabilities",
    "conditional_rows",
    "descent_update",
    "gradient",
    "gradient_workspace",
    "joint_packed",
    "joint_packed_from_distances",
    "joint_packed_in_place",
    "joint_sparse",
    "joint_sparse_counts",
    "p_sums",
    "packed_size",
    "packed_start",
    "place_points",
    "place_points_from_distances",
    "repulsion_grid",
    "rows_from_packed",
]

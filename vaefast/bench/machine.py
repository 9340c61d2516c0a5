"""The machine card recorded with every benchmark figure: CPU, cores, ISA, versions, BLAS.

Torch-free: versions are read from package metadata, never by importing the package.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

# ISA flags (as /proc/cpuinfo names them) that decide which kernels ORT, BLAS and Numba use
ISA_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}
PACKAGES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "numba",
    "torch",
    "scikit-learn",
    "openTSNE",
    "zarr",
    "dask",
)


def cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines())}


def _blas() -> list[dict[str, Any]]:
    try:
        import numpy  # noqa: F401  (loads numpy's BLAS so threadpoolctl sees it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {
            k: lib.get(k)
            for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")
        }
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def card(threads: int | None = None) -> dict[str, Any]:
    """What a figure was measured on: CPU model, cores (online, usable, used), the ISA
    flags that matter, package versions and the BLAS numpy uses."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": (info.get("model name") or platform.processor() or platform.machine())
        + (
            f" (family {info['cpu family']}, model {info['model']})" if "cpu family" in info else ""
        ),
        "vendor": info.get("vendor_id"),
        "cores_online": os.cpu_count(),
        "cores_usable": usable,
        "threads_used": threads,
        "isa": [label for flag, label in ISA_FLAGS.items() if flag in flags],
        "python": platform.python_version(),
        "versions": _versions(),
        "blas": _blas(),
    }


def describe(card: dict[str, Any]) -> str:
    """One line for report headers, e.g. 'AMD EPYC, 2/2 cores (2 used), AVX2 AVX-512F ...'."""
    blas = ", ".join(
        f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in card.get("blas") or []
    )
    versions = ", ".join(f"{k} {v}" for k, v in card.get("versions", {}).items())
    return (
        f"{card.get('cpu')}; {card.get('cores_usable')}/{card.get('cores_online')} cores "
        f"({card.get('threads_used')} used); ISA: {' '.join(card.get('isa') or ['-'])}; "
        f"BLAS: {blas or '-'}; {versions}"
    )

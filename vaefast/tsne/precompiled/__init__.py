"""Precompiled t-SNE kernels: Numba's machine code, built for portable x86-64 levels and
shipped in the package, so a first map on a fresh install does not wait ~20 s for
Numba to compile its kernels.

Each level folder (``x86-64-v4``: AVX-512; ``x86-64-v3``: AVX2 and FMA) is an ordinary
Numba cache, compiled for that level's CPU name with no host-specific features, only
the level's ``TUNING`` (512-bit vectors for AVX-512) (``python -m
vaefast.tsne.precompiled.build``, ``make kernels``). At import, each kernel
of the numba backend gets a cache that first looks in the folder of the highest level
this CPU runs, then in Numba's own cache. An entry is used only where everything it was
built from matches: the kernels' sources (``stamp``), Numba's version, the Python
version, the target triple and the signature; anything else (another Python, macOS,
ARM, a CPU below AVX2, an edited kernel) compiles and caches locally as before.
``VAEFAST_PRECOMPILED=0`` turns the shipped code off. Numba's cache files are pickles:
these are the package's own, built by the command above, never a user's file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parent
# x86-64 micro-architecture levels (the psABI), highest first, with the LLVM host features
# each needs; a level's code runs on any CPU that has them.
_V2 = ("cx16", "sahf", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3")
_V3 = (*_V2, "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave")
_V4 = (*_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
LEVELS = {"x86-64-v4": _V4, "x86-64-v3": _V3}
# LLVM features each level is built with beyond its CPU name: LLVM tunes x86-64-v4 to
# prefer 256-bit vectors, and the loops it vectorizes itself (P's binary search, the KL's
# logs) run ~1.25x faster in 512-bit ones (RESULTS.md); the pair kernel's are explicit.
TUNING = {"x86-64-v4": "-prefer-256-bit", "x86-64-v3": ""}
OFF = "VAEFAST_PRECOMPILED"  # "0": compile locally, as without shipped code


def stamp(modules: list[ModuleType]) -> str:
    """sha256 of the kernel modules' sources: shipped code built from other sources is
    never used (Numba's own key hashes a kernel's bytecode, not the functions it calls)."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def host_level() -> str | None:
    """The highest level in ``LEVELS`` this CPU runs, or None."""
    import llvmlite.binding as ll

    features = {name for name, on in ll.get_host_cpu_features().items() if on}
    return next((level for level, need in LEVELS.items() if features.issuperset(need)), None)


def dispatchers(modules: list[ModuleType]) -> list:
    """The cached Numba kernels defined in ``modules``, in a fixed order."""
    from numba.core.caching import FunctionCache
    from numba.core.dispatcher import Dispatcher

    found = []
    for module in modules:
        for _, value in sorted(vars(module).items()):
            if (
                isinstance(value, Dispatcher)
                and value.py_func.__module__ == module.__name__
                and isinstance(value._cache, FunctionCache)
            ):
                found.append(value)
    return found


def _shipped_cache_class():
    from numba.core.caching import FunctionCache, IndexDataCacheFile

    class ShippedFirst(FunctionCache):
        """Numba's cache of one kernel, behind the shipped code of one level."""

        def __init__(self, py_func, folder: Path, level: str, source_stamp: str):
            super().__init__(py_func)
            self._level = level
            self._shipped = IndexDataCacheFile(str(folder), self._impl.filename_base, source_stamp)

        def _load_overload(self, sig, target_context):
            if self._enabled:
                sig_key, magic, code = self._index_key(sig, target_context.codegen())
                key = (sig_key, (magic[0], self._level, TUNING[self._level]), code)
                data = self._shipped.load(key)
                if data is not None:
                    return self._impl.rebuild(target_context, data)
            return super()._load_overload(sig, target_context)

    return ShippedFirst


def attach(modules: list[ModuleType]) -> str | None:
    """Give the kernels of ``modules`` the shipped code of this CPU's level, where there is
    some; returns the level used (None: kernels compile locally)."""
    if os.environ.get(OFF, "1") == "0":
        return None
    level = host_level()
    folder = ROOT / level if level else None
    if folder is None or not folder.is_dir():
        return None
    ShippedFirst = _shipped_cache_class()
    source_stamp = stamp(modules)
    for kernel in dispatchers(modules):
        kernel._cache = ShippedFirst(kernel.py_func, folder, level, source_stamp)
    return level

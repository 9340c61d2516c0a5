"""exp and log of one float64, in a form LLVM inlines into a loop and vectorizes.

Without SVML, libm's scalar calls cost ~6 ns per element and block vectorization. These
use only arithmetic and bit casts (no int <-> double conversion, which AVX2 lacks): the
exponent moves through the 2^52 + 2^51 "magic number". Accurate to ~1e-14 relative
(``exp_nonpositive_coarse``: 1e-8; ``log_positive32``, float32 throughout: 3e-7).

All are compiled without reassociation. The exps are not inlined at Numba's
level (reassociation in a caller compiled with ``reassoc`` would fold its magic number
away); LLVM inlines it with its own flags. The logs are inlined at Numba's level
(``inline="always"``): they have no such constant, and take their caller's flags.

Numba's on-disk cache keys each kernel on its own file only: after editing this file,
touch the ``_*_kernels.py`` modules so the kernels that inline these functions recompile.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
SQRT2 = 1.4142135623730951
MAGIC = 6755399441055744.0  # 2^52 + 2^51: adding it puts an integer in the low bits
TWO52 = 4503599627370496.0  # 2^52
MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
EXP_ONE = np.int64(0x3FF0000000000000)
EXP_TWO52 = np.int64(0x4330000000000000)
EXP_FASTMATH = {"contract", "nsz"}


@intrinsic
def _bits(typingctx, x):
    """The int64 with the bits of float64 x."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits32(typingctx, x):
    """The int32 with the bits of float32 x."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float32(typingctx, x):
    """The float32 with the bits of int32 x."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float(typingctx, x):
    """The float64 with the bits of int64 x."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, fastmath=EXP_FASTMATH, inline="always")
def _reduce(x):
    """(r, 2^k) with x = k ln 2 + r, |r| <= ln2/2, for -708 <= x <= 0 (x clamped)."""
    v = max(x, -708.0)
    t = v * INV_LN2 + MAGIC  # low mantissa bits: k = round(v / ln 2)
    k = t - MAGIC
    r = (v - k * LN2_HI) - k * LN2_LO
    return r, _float((_bits(t) + np.int64(1023)) << np.int64(52))


@njit(cache=True, fastmath=EXP_FASTMATH)
def exp_nonpositive(x: float) -> float:
    """exp(x) for x <= 0 (0 below -708)."""
    r, scale = _reduce(x)
    # Taylor series of exp on |r| <= ln2/2 to degree 12 (remainder < 4e-16)
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * scale if x >= -708.0 else 0.0


EXP_COARSE_ERROR = 1e-8  # bound on exp_nonpositive_coarse's relative error (tested)


@njit(cache=True, fastmath=EXP_FASTMATH)
def exp_nonpositive_coarse(x: float) -> float:
    """exp(x) for x <= 0 (0 below -708) to EXP_COARSE_ERROR relative: degree 7 (remainder
    < 7.4e-9), half the multiply-adds of ``exp_nonpositive``, for sums whose use can
    tolerate it (the perplexity search decides with it where the error cannot flip a
    decision)."""
    r, scale = _reduce(x)
    p = 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * scale if x >= -708.0 else 0.0


@njit(cache=True, fastmath=EXP_FASTMATH, inline="always")
def log_positive(x: float) -> float:
    """log(x) for a positive normal x."""
    bits = _bits(x)
    m = _float((bits & MANTISSA) | EXP_ONE)  # x = m 2^e, 1 <= m < 2
    big = m > SQRT2
    m = m * 0.5 if big else m
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    t = 1.0 / 23.0  # 2 atanh(s) for |s| <= 0.172, odd terms to s^23
    t = t * s2 + 1.0 / 21.0
    t = t * s2 + 1.0 / 19.0
    t = t * s2 + 1.0 / 17.0
    t = t * s2 + 1.0 / 15.0
    t = t * s2 + 1.0 / 13.0
    t = t * s2 + 1.0 / 11.0
    t = t * s2 + 1.0 / 9.0
    t = t * s2 + 1.0 / 7.0
    t = t * s2 + 1.0 / 5.0
    t = t * s2 + 1.0 / 3.0
    t = t * s2 + 1.0
    e = _float((bits >> np.int64(52)) | EXP_TWO52) - (TWO52 + 1023.0) + (1.0 if big else 0.0)
    return e * LN2_HI + (e * LN2_LO + 2.0 * s * t)


LOG32_ERROR = 3e-7  # bound on log_positive32's relative error (tested)
F32_LN2 = np.float32(0.6931471805599453)
F32_SQRT2 = np.float32(SQRT2)
MANTISSA32 = np.int32(0x007FFFFF)
EXP_ONE32 = np.int32(0x3F800000)


@njit(cache=True, fastmath=EXP_FASTMATH, inline="always")
def log_positive32(x):
    """log(x) for a positive normal float32 x, in float32 (16 lanes of AVX-512 where
    ``log_positive`` has 8): 2 atanh(s) to s^9 (remainder < 1e-9), LOG32_ERROR relative.
    For sums of many terms whose float32 rounding averages out (the KL's)."""
    bits = _bits32(x)
    m = _float32((bits & MANTISSA32) | EXP_ONE32)  # x = m 2^e, 1 <= m < 2
    big = m > F32_SQRT2
    m = m * np.float32(0.5) if big else m
    s = (m - np.float32(1.0)) / (m + np.float32(1.0))
    s2 = s * s
    t = np.float32(1.0 / 9.0)
    t = t * s2 + np.float32(1.0 / 7.0)
    t = t * s2 + np.float32(1.0 / 5.0)
    t = t * s2 + np.float32(1.0 / 3.0)
    t = t * s2 + np.float32(1.0)
    e = np.float32((bits >> np.int32(23)) - np.int32(127)) + (
        np.float32(1.0) if big else np.float32(0.0)
    )
    return e * F32_LN2 + np.float32(2.0) * s * t

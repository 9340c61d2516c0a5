"""Sixteen float32 lanes as one Numba value (LLVM's <16 x float>), for the pair kernels.

LLVM's loop vectorizer keeps to 256-bit vectors on the CPUs it tunes for "prefer 256
bits" (every AVX-512 Xeon, and the ``x86-64-v4`` level the package ships), and it
does not fuse a product that is used twice. A kernel written on these values is
vectorized as written: AVX-512 runs each operation in one zmm register (two FMA ports
on Xeon server cores: twice the lanes of ymm), AVX2 in two ymm registers.

Every operation is plain IEEE float32 (no fast-math flags; ``fma`` is fused), and
``total`` adds the lanes in one fixed order, so a kernel's bits do not depend on the
flags of the function that inlines it. Indices are element indices of a 1-D
contiguous float32 array; nothing is bounds-checked.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

LANES = 16
_VEC = ir.VectorType(ir.FloatType(), LANES)
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_ZERO = ir.Constant(_VEC, [0.0] * LANES)


class F32x16(types.Type):
    """The Numba type of 16 float32 lanes."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _address(context, builder, sig, args):
    """Pointer to element args[1] of the 1-D array args[0], as a <16 x float>*."""
    array = context.make_array(sig.args[0])(context, builder, args[0])
    j = context.cast(builder, args[1], sig.args[1], types.uint64)
    return builder.bitcast(builder.gep(array.data, [j]), _VEC.as_pointer())


def _first(context, builder, k, kty):
    """The lane mask 'lane < k'."""
    k = context.cast(builder, k, kty, types.uint64)
    lanes = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
    spread = builder.insert_element(ir.Constant(lanes.type, ir.Undefined), k, _I32(0))
    zeros = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
    return builder.icmp_unsigned("<", lanes, builder.shuffle_vector(spread, spread, zeros))


def _llvm(builder, name, ret, params):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, params), name)


@intrinsic
def load(typingctx, a, j):
    """a[j : j + 16]."""

    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig, args), align=4)

    return f32x16(a, j), codegen


@intrinsic
def store(typingctx, a, j, v):
    """a[j : j + 16] = v."""

    def codegen(context, builder, sig, args):
        builder.store(args[2], _address(context, builder, sig, args), align=4)
        return context.get_dummy_value()

    return types.none(a, j, v), codegen


@intrinsic
def load_first(typingctx, a, j, k):
    """a[j : j + k] in the first k lanes (k < 16), zeros in the others; reads nothing
    past a[j + k - 1]."""

    def codegen(context, builder, sig, args):
        mask = _first(context, builder, args[2], sig.args[2])
        ptr = _address(context, builder, sig, args)
        fn = _llvm(builder, "llvm.masked.load.v16f32.p0", _VEC, [ptr.type, _I32, mask.type, _VEC])
        return builder.call(fn, [ptr, _I32(4), mask, _ZERO])

    return f32x16(a, j, k), codegen


@intrinsic
def store_first(typingctx, a, j, k, v):
    """a[j : j + k] = the first k lanes of v (k < 16); writes nothing else."""

    def codegen(context, builder, sig, args):
        mask = _first(context, builder, args[2], sig.args[2])
        ptr = _address(context, builder, sig, args)
        fn = _llvm(
            builder, "llvm.masked.store.v16f32.p0", ir.VoidType(), [_VEC, ptr.type, _I32, mask.type]
        )
        builder.call(fn, [args[3], ptr, _I32(4), mask])
        return context.get_dummy_value()

    return types.none(a, j, k, v), codegen


@intrinsic
def keep_first(typingctx, v, k):
    """v's first k lanes, zeros in the others."""

    def codegen(context, builder, sig, args):
        return builder.select(_first(context, builder, args[1], sig.args[1]), args[0], _ZERO)

    return f32x16(v, k), codegen


@intrinsic
def splat(typingctx, x):
    """x (cast to float32) in every lane."""

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[0], sig.args[0], types.float32)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, _I32(0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))

    return f32x16(x), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a b + c, rounded once."""

    def codegen(context, builder, sig, args):
        return builder.call(_llvm(builder, "llvm.fma.v16f32", _VEC, [_VEC] * 3), list(args))

    return f32x16(f32x16, f32x16, f32x16), codegen


@intrinsic
def total(typingctx, v):
    """The sum of v's lanes, float32: halves added lane by lane down to one."""

    def codegen(context, builder, sig, args):
        x = args[0]
        width = LANES
        while width > 1:
            width //= 2
            low = ir.Constant(ir.VectorType(_I32, width), list(range(width)))
            high = ir.Constant(ir.VectorType(_I32, width), list(range(width, 2 * width)))
            x = builder.fadd(builder.shuffle_vector(x, x, low), builder.shuffle_vector(x, x, high))
        return builder.extract_element(x, _I32(0))

    return types.float32(f32x16), codegen


def _lanewise(instruction: str):
    @intrinsic
    def op(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, instruction)(args[0], args[1])

        return f32x16(f32x16, f32x16), codegen

    def typed(a, b):
        if isinstance(a, F32x16) and isinstance(b, F32x16):
            return lambda a, b: op(a, b)

    return typed


# +, -, * and / between two f32x16 values, lane by lane
for _operators, _instruction in (
    ((operator.add, operator.iadd), "fadd"),
    ((operator.sub, operator.isub), "fsub"),
    ((operator.mul, operator.imul), "fmul"),
    ((operator.truediv, operator.itruediv), "fdiv"),
):
    for _operator in _operators:
        overload(_operator)(_lanewise(_instruction))


@intrinsic
def bits16(typingctx, mask, bit):
    """The 16 bits of the uint8 bit array ``mask`` from bit index ``bit`` on (bit b at
    bit b % 8 of byte b // 8), as the low bits of a uint64. Reads the 8 bytes from
    byte bit // 8 on: the array has 8 bytes past its last used one."""

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        b = context.cast(builder, args[1], sig.args[1], types.uint64)
        byte = builder.gep(array.data, [builder.lshr(b, _I64(3))])
        word = builder.load(builder.bitcast(byte, _I64.as_pointer()), align=1)
        word = builder.lshr(word, builder.and_(b, _I64(7)))
        return builder.and_(word, _I64(0xFFFF))

    return types.uint64(mask, bit), codegen


@intrinsic
def expand(typingctx, values, k, bits, fill):
    """Lane l gets the next of values[k], values[k + 1], ... where bit l of ``bits``
    is set, ``fill``'s lane l elsewhere (AVX-512's vexpandps); reads popcount(bits)
    values."""

    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig, args[:2])
        low = builder.trunc(
            context.cast(builder, args[2], sig.args[2], types.uint64), ir.IntType(16)
        )
        mask = builder.bitcast(low, ir.VectorType(ir.IntType(1), LANES))
        fn = _llvm(builder, "llvm.masked.expandload.v16f32", _VEC, [ptr.type, mask.type, _VEC])
        return builder.call(fn, [ptr, mask, args[3]])

    return f32x16(values, k, bits, fill), codegen


@intrinsic
def popcount(typingctx, x):
    """The number of set bits of a uint64, as an int64 (a count to add to an index)."""

    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[0], sig.args[0], types.uint64)
        return builder.call(_llvm(builder, "llvm.ctpop.i64", _I64, [_I64]), [x])

    return types.int64(x), codegen

"""SIMD helpers for the kernels, written as LLVM IR through numba intrinsics.

The model state is float32 [n, m, groups, 2, LANES], groups = ceil(k / LANES): for feature j and
field f, lanes of the latent vector w[j, f] alternate with their AdaGrad accumulators in blocks
of 4 (libffm's SSE layout; padded lanes stay 0). Kernels take it flattened; `dot4` / `adagrad4`
process one block of 4 lanes as SIMD vectors: numba does not vectorise these loops itself, and
its scalar sqrt is a libm call that costs more than the rest of the update.

numba's on-disk cache (`cache=True`) checks only the timestamp of the file that defines a
kernel: after editing this file, delete models/libffm/__pycache__ (or touch kernels.py), or the
kernels keep the machine code built from the old helpers.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

# fastmath without nnan/ninf: an overflowing score must stay visible, not become undefined.
FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
LANES = 4
_VECTOR = ir.VectorType(ir.FloatType(), LANES)
_FAST_FLAGS = tuple(sorted(FAST))
# On x86-64, 1 / sqrt(G) is rsqrtps alone, the 12-bit estimate libffm's update uses
# (_mm_rsqrt_ps): 17% less CPU per epoch than LLVM's rsqrtps + Newton step for g / sqrt(G) on a
# cache-resident model (bench/README.md). Elsewhere sqrt and a division.
_RSQRT = "llvm.x86.sse.rsqrt.ps" if platform.machine().lower() in ("x86_64", "amd64") else None


def _vector_pointer(builder, data, offset):
    return builder.bitcast(builder.gep(data, [offset]), _VECTOR.as_pointer())


def _broadcast(builder, value):
    vector = ir.Constant(_VECTOR, ir.Undefined)
    for lane in range(LANES):
        vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
    return vector


@intrinsic
def dot4(typingctx, state, p, q):
    """sum over 4 lanes of state[p + d] * state[q + d]."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        left = builder.load(_vector_pointer(builder, data, args[1]), align=4)
        right = builder.load(_vector_pointer(builder, data, args[2]), align=4)
        product = builder.fmul(left, right, flags=_FAST_FLAGS)
        lanes = [builder.extract_element(product, ir.Constant(ir.IntType(32), lane))
                 for lane in range(LANES)]
        return builder.fadd(builder.fadd(lanes[0], lanes[1], flags=_FAST_FLAGS),
                            builder.fadd(lanes[2], lanes[3], flags=_FAST_FLAGS), flags=_FAST_FLAGS)
    return types.float32(state, p, q), codegen


@intrinsic
def adagrad4(typingctx, state, p, q, kappa_v, eta, l2):
    """libffm's update of 4 lanes of one pair; weights at p and q, accumulators 4 floats later:
    g1 = l2 w1 + kappa_v w2, g2 = l2 w2 + kappa_v w1, G += g^2, w -= eta g / sqrt(G) (1 / sqrt(G)
    estimated as libffm does on x86-64)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        four = ir.Constant(args[1].type, LANES)
        offsets = (args[1], args[2], builder.add(args[1], four), builder.add(args[2], four))
        w1, w2, sum1, sum2 = (builder.load(_vector_pointer(builder, data, offset), align=4)
                              for offset in offsets)
        kappa_v, eta, l2 = (_broadcast(builder, value) for value in args[3:])

        def mul(a, b):
            return builder.fmul(a, b, flags=_FAST_FLAGS)

        def add(a, b):
            return builder.fadd(a, b, flags=_FAST_FLAGS)

        g1 = add(mul(l2, w1), mul(kappa_v, w2))
        g2 = add(mul(l2, w2), mul(kappa_v, w1))
        sum1, sum2 = add(sum1, mul(g1, g1)), add(sum2, mul(g2, g2))
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR]), _RSQRT or "llvm.sqrt.v4f32")

        def step(g, accumulated):  # eta g / sqrt(G)
            if _RSQRT:
                return mul(mul(eta, g), builder.call(function, [accumulated]))
            return builder.fdiv(mul(eta, g), builder.call(function, [accumulated]),
                                flags=_FAST_FLAGS)

        w1 = builder.fsub(w1, step(g1, sum1), flags=_FAST_FLAGS)
        w2 = builder.fsub(w2, step(g2, sum2), flags=_FAST_FLAGS)
        for value, offset in zip((w1, w2, sum1, sum2), offsets):
            builder.store(value, _vector_pointer(builder, data, offset), align=4)
        return context.get_dummy_value()
    return types.void(state, p, q, types.float32, types.float32, types.float32), codegen


@intrinsic
def prefetch(typingctx, state, offset):
    """Hints the cache line holding state[offset] into the cache (for writing)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3),
            "llvm.prefetch.p0")
        flags = [ir.Constant(ir.IntType(32), value) for value in (1, 3, 1)]  # write, keep, data
        builder.call(function, [builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)]
                     + flags)
        return context.get_dummy_value()
    return types.void(state, offset), codegen

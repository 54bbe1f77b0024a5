"""Fixes to Apache TVM 0.27's ONNX frontend (tvm.relax.frontend.onnx) for what lrac's exported
graphs contain; :func:`apply` installs them (lrac.tvm_engine calls it once, before importing).

* ``com.microsoft.Inverse`` (no converter): Gauss-Jordan with partial pivoting in TIR.
* Binary ops whose input is a tuple item (from Split / SequenceAt) were taken for constants.
* Expand of a constant shape with a 0 (the empty states at a stream's start) was refused.
* Reshape with ``allowzero=1`` and a constant target with a 0 became a symbolic shape that
  later fails to legalize.
* Min / Max of two inputs broadcast a size-0 dimension against size 1 to 1.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend as F
from tvm.script import tirx as T


def _dtype(ty) -> str:
    return str(ty.dtype.dtype) if hasattr(ty.dtype, "dtype") else str(ty.dtype)


def _make_inverse(batch: int, n: int, dtype: str):
    """A TIR function inverting ``batch`` n x n matrices (Gauss-Jordan, partial pivoting)."""

    @T.prim_func(private=True, s_tir=True)
    def inverse(a: T.Buffer((batch, n, n), dtype), out: T.Buffer((batch, n, n), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            m = T.sblock_alloc_buffer((n, 2 * n), dtype)
            piv = T.sblock_alloc_buffer((1,), "int32")
            best = T.sblock_alloc_buffer((1,), dtype)
            for b in T.serial(batch):
                for r, col in T.grid(n, 2 * n):   # [A | I]
                    m[r, col] = T.if_then_else(col < n, a[b, r, col],
                                               T.if_then_else(col - n == r, T.Cast(dtype, 1), T.Cast(dtype, 0)))
                for k in T.serial(n):
                    piv[0] = k
                    best[0] = T.abs(m[k, k])
                    for r in T.serial(k + 1, n):
                        if T.abs(m[r, k]) > best[0]:
                            best[0] = T.abs(m[r, k])
                            piv[0] = r
                    if piv[0] != k:
                        for col in T.serial(2 * n):
                            best[0] = m[k, col]
                            m[k, col] = m[piv[0], col]
                            m[piv[0], col] = best[0]
                    best[0] = T.Cast(dtype, 1) / m[k, k]
                    for col in T.serial(2 * n):
                        m[k, col] = m[k, col] * best[0]
                    for r in T.serial(n):
                        if r != k:
                            for col in T.serial(2 * n):
                                if col != k:
                                    m[r, col] = m[r, col] - m[r, k] * m[k, col]
                            m[r, k] = T.Cast(dtype, 0)
                for r, col in T.grid(n, n):
                    out[b, r, col] = m[r, n + col]

    return inverse


class _Inverse(F.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        shape = [int(s) for s in x.ty.shape]
        dtype, n = _dtype(x.ty), shape[-1]
        batch = int(np.prod(shape[:-2], dtype=np.int64))
        if batch == 0:
            return relax.op.zeros(relax.ShapeExpr(shape), dtype)
        gv = bb.add_func(_make_inverse(batch, n, dtype), "inverse")
        x3 = bb.normalize(relax.op.reshape(x, (batch, n, n)))
        y = bb.emit(relax.call_tir(gv, [x3], relax.TensorType((batch, n, n), dtype)))
        return relax.op.reshape(y, shape)


def apply() -> None:
    convert_map = F._get_convert_map

    def with_inverse():
        table = convert_map()
        table["Inverse"] = _Inverse
        return table

    F._get_convert_map = with_inverse

    # BinaryBase takes any input that is not a Call or Var for a constant (.value.numpy()): bind a
    # tuple item (Split / SequenceAt output) to a variable first
    binary = F.BinaryBase.base_impl.__func__

    def base_impl(cls, bb, inputs, attr, params):
        inputs = [bb.emit(x) if isinstance(x, relax.TupleGetItem) else x for x in inputs]
        return binary(cls, bb, inputs, attr, params)

    F.BinaryBase.base_impl = classmethod(base_impl)

    # Expand to a constant shape with a 0 is refused; the result is empty: zeros of that shape
    expand = F.Expand._impl_v13.__func__

    def expand_v13(cls, bb, inputs, attr, params):
        data, shape = inputs[0], inputs[1]
        if isinstance(shape, tvm.ir.GenericConst):
            target = [int(v) for v in shape.value.numpy().tolist()]
            if 0 in target:
                out = np.broadcast_shapes(tuple(int(d) for d in data.ty.shape), tuple(target))
                return relax.op.zeros(relax.ShapeExpr(list(out)), _dtype(data.ty))
        return expand(cls, bb, inputs, attr, params)

    F.Expand._impl_v13 = classmethod(expand_v13)

    # Reshape, allowzero=1: a 0 in the target is a literal 0 and the spec forbids -1 beside it, so
    # a constant target is the static shape (the frontend made it symbolic: fails in LegalizeOps)
    reshape = F.Reshape._impl_v13.__func__

    def reshape_v13(cls, bb, inputs, attr, params):
        data, shape = inputs[0], inputs[1]
        target = F.get_constant(shape, params)
        if attr.get("allowzero", 0) and isinstance(target, tvm.ir.GenericConst) \
                and not isinstance(data, (relax.ShapeExpr, tvm.ir.GenericConst)):
            values = [int(v) for v in target.value.numpy().tolist()]
            if 0 in values and -1 not in values:
                return relax.op.reshape(data, values)
        return reshape(cls, bb, inputs, attr, params)

    F.Reshape._impl_v13 = classmethod(reshape_v13)

    # Min / Max broadcast with compute_broadcast_shape, which makes 0 against 1 a 1 (broadcast_to
    # then fails); for two inputs the binary minimum / maximum broadcast a 0 correctly
    multi = F.MultiInputBase._impl_v1.__func__

    def multi_v1(cls, bb, inputs, attr, params):
        if len(inputs) == 2 and getattr(cls, "binary_op", None) is not None \
                and not all(isinstance(i, tvm.ir.GenericConst) for i in inputs) \
                and all(getattr(i.ty, "shape", None) is not None for i in inputs):
            return cls.binary_op(inputs[0], inputs[1])
        return multi(cls, bb, inputs, attr, params)

    F.MultiInputBase._impl_v1 = classmethod(multi_v1)

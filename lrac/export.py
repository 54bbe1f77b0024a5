"""Export the streaming coder to ONNX: encoder-step and decoder-step graphs with explicit state.

Each graph runs one streaming call of the PyTorch model (:class:`~lrac.codec.StreamEncoder` /
:class:`~lrac.codec.StreamDecoder`) on a chunk of whole frames, from one state layout (below), and
returns the next state::

    encoder  audio [1, 1, N * hop] float32, state...  ->  tokens [1, n_stages, f] int64, next.state...
    decoder  tokens [1, n_q, N] int64, state...       ->  audio [1, 1, n] float32, next.state...

A chunk of 0 frames ends the stream (the flush: look-ahead layers emit what they held back). Start a
stream at layout 0 with empty tensors for every state, run the graph the sidecar names for the
layout and the chunk's shape, then keep each call's ``next.*`` outputs and go to the layout it
names (docs/onnx.md). The encoder always computes every stage; a bitrate of ``n_q`` stages keeps
the first ``n_q`` token rows (they do not depend on the later stages).

How it stays generic. Nothing here knows the model's layers: the export walks the
:class:`~lrac.models.streaming.StreamingModule` tree and flattens every module's
:class:`~lrac.models.streaming.State` into named tensors (``state.<module path>.<attribute>``).
What is not a tensor (a counter, a ``None`` before the first frames, a flag) fixes the state's
*layout*: the shapes and values that decide how a call runs. A stream passes through a few layouts (a
start-up transient while look-ahead layers fill, then a short cycle, e.g. the pitch code's 2-frame
groups), and the export finds them all by running the model on every supported chunk size from
every layout it reaches. Each (layout, chunk size) pair is traced once with ``torch.onnx.export``
and written as its own graph file (one graph with an ``If`` tree over the branches cost about a
third more per call); the weights they share are stored once. A new streaming layer exports
without code of its own, provided its counters are bounded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .models.streaming import State, StreamingModule, run_with_states

ONNX_FORMAT = "lrac-onnx"
FORMAT_VERSION = 2
DEFAULT_CHUNK_FRAMES = (1, 4)   # 10 and 40 ms chunks at hop 240 (each size adds branches to trace)
MAX_LAYOUTS = 64       # a stream that never settles into a cycle has an unbounded counter in its state
OPSET = 18
SIDECAR = "lrac-onnx.json"
WEIGHTS = "weights.bin"


class ExportError(ValueError):
    """A model that cannot be exported; the message says which part and why in one line."""


# -- translations for the few ATen ops the ONNX exporter lacks ---------------------------------------
def _onnx_translations() -> dict:
    """``torch.onnx.export`` translations: ``cummax`` and integer shifts (the pitch code uses them, the
    exporter lacks them), ``linalg.solve`` (the low-band fit) and real FFTs of lengths that are not
    powers of two (as matrix products)."""
    import onnx_ir as ir
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset

    from onnx.defs import OpSchema

    # onnxruntime's Inverse (com.microsoft); its schema, which the ONNX package does not hold
    schema = OpSchema("Inverse", "com.microsoft", 1, inputs=[OpSchema.FormalParameter("X", "T")],
                      outputs=[OpSchema.FormalParameter("Y", "T")],
                      type_constraints=[("T", ["tensor(float)", "tensor(double)"], "")])
    inverse = Op(Opset("com.microsoft", 1), "Inverse", schema)
    # and its FastGelu: GELU's tanh approximation in one node (eight in standard ops)
    schema = OpSchema("FastGelu", "com.microsoft", 1, inputs=[OpSchema.FormalParameter("X", "T")],
                      outputs=[OpSchema.FormalParameter("Y", "T")],
                      type_constraints=[("T", ["tensor(float)", "tensor(double)"], "")])
    fast_gelu = Op(Opset("com.microsoft", 1), "FastGelu", schema)

    def cummax(self, dim: int):
        # running maximum along the last axis of a short tensor: a masked ReduceMax over a triangle
        rank = len(self.shape)
        if dim % rank != rank - 1:
            raise NotImplementedError("cummax is exported along the last axis only")
        n = self.shape[-1]
        if not isinstance(n, int):
            raise NotImplementedError("cummax is exported for static lengths only")
        keep = ir.tensor(np.tril(np.ones((n, n), dtype=bool)))            # [j, k]: k <= j
        lowest = (np.iinfo(np.int64).min if self.dtype == ir.DataType.INT64 else -np.inf)
        fill = op.CastLike(op.Constant(value=ir.tensor(np.array(lowest))), self)
        masked = op.Where(op.Constant(value=keep), op.Unsqueeze(self, op.Constant(value_ints=[-2])), fill)
        values = op.ReduceMax(masked, op.Constant(value_ints=[-1]), keepdims=0)
        return values, op.ArgMax(masked, axis=-1, keepdims=0, select_last_index=1)

    def shift(direction: str):
        # the codes shifted here are never negative: a shift is a product with (or a division by)
        # a power of two, one node where ONNX BitShift needs unsigned casts around it (three)
        def translate(self, other):
            power = (op.Pow(op.CastLike(op.Constant(value_int=2), other), other) if hasattr(other, "dtype")
                     else op.Constant(value_int=1 << int(other)))
            power = op.CastLike(power, self)
            return op.Mul(self, power) if direction == "LEFT" else op.Div(self, power)
        return translate

    from onnxscript.function_libs.torch_lib.ops.fft import aten__fft_c2r, aten__fft_r2c

    def matmul_lengths(self, dim, n: int) -> bool:
        # onnxruntime's DFT is an FFT for powers of two only; other lengths (the 480-sample STFT)
        # are O(n^2) loops, far slower than the same transform as a matrix product
        rank = len(self.shape)
        return len(dim) == 1 and dim[0] % rank == rank - 1 and isinstance(n, int) and n & (n - 1) != 0

    def scale(normalization: int, n: int) -> float:
        return {0: 1.0, 1: 1 / np.sqrt(n), 2: 1 / n}[normalization]

    def const(array: np.ndarray, like):
        numpy_dtype = np.float64 if like.dtype == ir.DataType.DOUBLE else np.float32
        return op.Constant(value=ir.tensor(np.ascontiguousarray(array, dtype=numpy_dtype)))

    def ints(*values) -> Any:
        return op.Constant(value_ints=[int(v) for v in values])

    def static(shape) -> bool:
        return all(isinstance(d, int) for d in shape)

    def rfft(self, dim, normalization: int, onesided: bool):
        n = self.shape[-1]
        if not (onesided and matmul_lengths(self, dim, n) and static(self.shape)):
            return aten__fft_r2c(self, dim, normalization, onesided)
        stages = rfft_stages(n)
        if stages is None:      # a prime length: one product with the whole DFT matrix
            k = np.arange(n // 2 + 1)
            angle = 2 * np.pi * np.outer(np.arange(n), k) / n                      # [n, bins]
            matrix = np.stack([np.cos(angle), -np.sin(angle)], -1).reshape(n, -1) * scale(normalization, n)
            shape = op.Concat(op.Shape(self, start=0, end=-1), ints(n // 2 + 1, 2), axis=0)
            return op.Reshape(op.MatMul(self, const(matrix, self)), shape)
        # two stages of small products (lrac.export.rfft_stages): kilobytes of constants, not the
        # megabyte of the whole DFT matrix that every call would read
        first, second = stages
        second = second * scale(normalization, n)
        lead, r = list(self.shape[:-1]), len(self.shape) - 1
        n2 = first.shape[1]
        n1, k1 = n // n2, second.shape[-1] // 2
        x = op.Reshape(self, ints(*lead, n2, n1))
        a = op.MatMul(const(first, self), x)                                     # [..., 2 * n2, n1]
        a = op.Transpose(op.Reshape(a, ints(*lead, 2, n2, n1)), perm=[*range(r), r + 1, r, r + 2])
        spectrum = op.MatMul(op.Reshape(a, ints(*lead, n2, 1, 2 * n1)), const(second, self))
        spectrum = op.Reshape(spectrum, ints(*lead, n2, 2, k1))                  # [..., k2, re/im, k1]
        spectrum = op.Transpose(spectrum, perm=[*range(r), r + 2, r, r + 1])     # [..., k1, k2, re/im]
        spectrum = op.Reshape(spectrum, ints(*lead, k1 * n2, 2))
        return op.Slice(spectrum, ints(0), ints(n // 2 + 1), ints(-2))

    def irfft(self, dim, normalization: int, last_dim_size):
        # complex input as real [..., bins, 2]; the transform runs along dim (the bins axis)
        rank = len(self.shape) - 1
        n = last_dim_size
        if not (len(dim) == 1 and dim[0] % rank == rank - 1 and isinstance(n, int) and n & (n - 1) != 0
                and self.shape[-2] == n // 2 + 1 and static(self.shape)):
            return aten__fft_c2r(self, dim, normalization, last_dim_size)
        stages = irfft_stages(n)
        if stages is None:
            k = np.arange(n // 2 + 1)
            weight = np.where((k == 0) | (2 * k == n), 1.0, 2.0)[:, None]          # one-sided spectrum
            angle = 2 * np.pi * np.outer(k, np.arange(n)) / n                      # [bins, n]
            matrix = np.stack([weight * np.cos(angle), -weight * np.sin(angle)], 1).reshape(-1, n)
            shape = op.Concat(op.Shape(self, start=0, end=-2), ints(-1), axis=0)
            return op.MatMul(op.Reshape(self, shape), const(matrix * scale(normalization, n), self))
        first, second = stages
        first = first * scale(normalization, n)
        k1, k2, n1 = first.shape[0], first.shape[1] // 2, first.shape[2] // 2
        n2 = second.shape[-1]
        lead, r = list(self.shape[:-2]), len(self.shape) - 2
        pads = [0] * (r + 2) * 2
        pads[r + 2 + r] = k1 * k2 - (n // 2 + 1)                                 # zero bins to k1 * k2
        x = op.Reshape(op.Pad(self, ints(*pads)), ints(*lead, k2, k1, 2))
        x = op.Transpose(x, perm=[*range(r), r + 1, r + 2, r])                   # [..., k1, re/im, k2]
        y = op.MatMul(op.Reshape(x, ints(*lead, k1, 1, 2 * k2)), const(first, self))
        y = op.Transpose(op.Reshape(y, ints(*lead, k1, 2, n1)), perm=[*range(r), r + 2, r + 1, r])
        out = op.MatMul(op.Reshape(y, ints(*lead, n1, 1, 2 * k1)), const(second, self))   # [..., n1, 1, n2]
        out = op.Transpose(op.Reshape(out, ints(*lead, n1, n2)), perm=[*range(r), r + 1, r])
        return op.Reshape(out, ints(*lead, n))

    def solve(a, b, left: bool = True, check_errors: bool = False):
        # ONNX has no linear solver; onnxruntime's Inverse (a contrib op every onnxruntime build has)
        # does it in two nodes for the small systems here (the low band's 6 x 6 least squares)
        if not left or len(b.shape) != len(a.shape):
            raise NotImplementedError("linalg.solve is exported for a matrix right side on the left only")
        unused = op.Constant(value=ir.tensor(np.zeros(1, dtype=np.int32)))    # LU pivots and info
        return op.MatMul(inverse(a), b), a, unused, unused

    from onnxscript.function_libs.torch_lib.ops.nn import aten_gelu

    def gelu(self, approximate: str = "none"):
        return fast_gelu(self) if approximate == "tanh" else aten_gelu(self, approximate)

    irfft.complex_input = True      # (see _trace)
    aten = torch.ops.aten
    return {aten.cummax.default: cummax, aten._fft_r2c.default: rfft, aten._fft_c2r.default: irfft,
            aten._linalg_solve_ex.default: solve, aten.gelu.default: gelu,
            aten.__rshift__.Tensor: shift("RIGHT"), aten.__rshift__.Scalar: shift("RIGHT"),
            aten.__lshift__.Tensor: shift("LEFT"), aten.__lshift__.Scalar: shift("LEFT")}


# -- real DFTs of lengths that are not powers of two, in two stages of small matrix products -----------
def _split(n: int, cost: Callable[[int], float]) -> int | None:
    """The divisor ``a`` of ``n`` (``1 < a < n``) of least ``cost(a)``, or None for a prime ``n``."""
    divisors = [a for a in range(2, n) if n % a == 0]
    return min(divisors, key=cost) if divisors else None


def rfft_stages(n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``rfft`` of length ``n = n1 * n2`` as two products (Cooley-Tukey with the twiddles folded into
    the second): ``x [..., n]`` -> ``a = first @ x.reshape(n2, n1)`` ``[2 * n2 (re, im; k2), n1]``, then
    per ``k2`` the row ``(a_re, a_im) [2 * n1]`` times ``second [n2, 2 * n1, 2 * k1]`` gives bins
    ``k = k2 + n2 * k1`` (re, im), of which ``k <= n / 2`` are kept. float64; None for a prime ``n``.

    For the 480-sample STFT: 22 k constants and 44 k multiplications, where the whole DFT matrix is
    231 k of each (0.9 MB of float32 read from memory on every call)."""
    n1 = _split(n, lambda a: 2 * (n // a) + 2 * a)
    if n1 is None:
        return None
    n2 = n // n1
    k1 = (n // 2) // n2 + 1                       # the k1 that reach bins k <= n / 2
    angle = 2 * np.pi * np.outer(np.arange(n2), np.arange(n2)) / n2
    first = np.concatenate([np.cos(angle), -np.sin(angle)], 0)                        # [2 * n2, n2]
    k = np.arange(n2)[:, None, None] + n2 * np.arange(k1)                             # [n2, 1, k1]
    angle = 2 * np.pi * np.arange(n1)[:, None] * k / n                                # [n2, n1, k1]
    second = np.concatenate([np.concatenate([np.cos(angle), -np.sin(angle)], -1),
                             np.concatenate([np.sin(angle), np.cos(angle)], -1)], 1)  # [n2, 2 n1, 2 k1]
    return first, second


def irfft_stages(n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``irfft`` to length ``n`` from ``n / 2 + 1`` bins as two products: the bins, zero-padded to
    ``k1 * k2`` and indexed ``k = k1' + k1 * k2'``, as rows ``(re, im; k2') [2 * k2]`` per ``k1'``
    times ``first [k1, 2 * k2, 2 * n1]``, then per ``n1'`` the row ``(re, im; k1') [2 * k1]`` times
    ``second [n1, 2 * k1, n2]`` gives samples ``n1' + n1 * n2'`` (``n1 = n / gcd(n, k1)``, ``n2 = n / n1``).
    The one-sided weights (1 at DC and Nyquist, whose imaginary parts are ignored, 2 elsewhere) are
    in ``first``; no normalisation. float64; None when no split exists."""
    bins = n // 2 + 1

    def shape(k1: int) -> tuple[int, int, int]:
        n1 = n // math.gcd(n, k1)
        return -(-bins // k1), n1, n // n1

    def size(k1: int) -> float:
        k2, n1, n2 = shape(k1)
        return k1 * 4 * k2 * n1 + n1 * 2 * k1 * n2 if 1 < n1 < n and n2 > 1 else math.inf

    k1 = min(range(2, bins), key=size, default=None)
    if k1 is None or size(k1) == math.inf:
        return None
    k2, n1, n2 = shape(k1)
    k = np.arange(k1)[:, None] + k1 * np.arange(k2)                                   # [k1, k2]
    weight = (np.where((k == 0) | (2 * k == n), 1.0, 2.0) * (k < bins))[..., None]
    imaginary = ((k != 0) & (2 * k != n))[..., None]
    angle = 2 * np.pi * k1 * np.outer(np.arange(k2), np.arange(n1)) / n               # [k2, n1]
    cos, sin = weight * np.cos(angle), weight * np.sin(angle)                          # [k1, k2, n1]
    first = np.concatenate([np.concatenate([cos, sin], -1),
                            np.concatenate([-sin * imaginary, cos * imaginary], -1)], 1)  # [k1, 2 k2, 2 n1]
    angle = 2 * np.pi * np.arange(k1)[:, None] * (np.arange(n1)[:, None, None] + n1 * np.arange(n2)) / n
    second = np.concatenate([np.cos(angle), -np.sin(angle)], 1)                        # [n1, 2 k1, n2]
    return first, second


# -- the state layouts of a stream -------------------------------------------------------------------
def _describe(value: Any, where: str) -> tuple:
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape))
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("value", value)
    raise ExportError(f"{where}: a stream state of type {type(value).__name__} cannot be exported "
                      "(tensors, numbers, None and strings can)")


@dataclass
class _Side:
    """One half of the codec as a streaming function: ``fn(chunk) -> output`` over ``root``'s layers."""
    name: str                       # "encoder" / "decoder"
    root: nn.Module                 # holds every layer with state
    fn: Callable                    # one streaming call
    chunk_name: str                 # graph input: "audio" or "tokens"
    output_name: str                # graph output: "tokens" or "audio"
    unit: int                       # chunk length units per frame (hop for audio, 1 for tokens)
    chunks: dict                    # example chunks: (rows, frames) -> tensor
    rows: list = field(default_factory=list)   # chunk rows: 1 for audio, the stage counts for tokens
    layers: list = field(default_factory=list)
    names: list = field(default_factory=list)


@dataclass
class _Layout:
    states: list                    # per layer: a State with example values (the first seen)
    signature: tuple


def _signature(states: list, names: list) -> tuple:
    return tuple(tuple(sorted((k, _describe(v, f"{n}.{k}")) for k, v in vars(s).items()))
                 for s, n in zip(states, names))


def _run(side: _Side, states: list, chunk: torch.Tensor, final: bool) -> torch.Tensor:
    """One call of ``side.fn`` on ``chunk`` with ``states`` (changed in place) swapped into the layers."""
    for s in states:
        s.final = final
    return run_with_states(side.layers, states, side.fn, chunk)


def _explore(side: _Side, kinds: list) -> tuple[list, dict]:
    """Every state layout a stream reaches with chunks of ``kinds`` ((rows, frames); frames 0 ends
    the stream), and the transitions ``{(layout, kind): next layout or -1}``."""
    initial = [m.init_state(1) for m in side.layers]
    layouts = [_Layout(initial, ("start",))]   # the start is its own layout: its values are constants
    index: dict = {}
    transitions: dict = {}
    todo = [0]
    while todo:
        p = todo.pop(0)
        for kind in kinds:
            states = copy.deepcopy(layouts[p].states)
            with torch.no_grad():
                _run(side, states, side.chunks[kind], final=kind[1] == 0)
            if kind[1] == 0:
                transitions[p, kind] = -1
                continue
            sig = _signature(states, side.names)
            if sig not in index:
                if len(layouts) >= MAX_LAYOUTS:
                    raise ExportError(f"{side.name}: the stream state never settles into a cycle "
                                      f"({_changing(layouts[-1].signature, sig, side.names)} keeps "
                                      "changing); keep its counters bounded (e.g. modulo a period)")
                index[sig] = len(layouts)
                layouts.append(_Layout(states, sig))
                todo.append(index[sig])
            transitions[p, kind] = index[sig]
    return layouts, transitions


def _changing(a: tuple, b: tuple, names: list) -> str:
    for name, x, y in zip(names, a, b):
        if x != y:
            return name
    return "a state"


# -- one branch: a streaming call as a pure function -------------------------------------------------
class _Step(nn.Module):
    """``(chunk, *state tensors) -> (output, *next state tensors)`` for one layout and chunk shape.

    ``slots``: (layer index, attribute, dtype, rank) of every state tensor of any layout; a slot that is
    not a tensor in this layout is ignored on input and comes out empty. The start layout's values
    are constants of the graph (its inputs are ignored)."""

    def __init__(self, side: _Side, layout: _Layout, slots: list, final: bool, start: bool) -> None:
        super().__init__()
        self.root = side.root
        self.side, self.slots, self.final, self.start = side, slots, final, start
        self.template = layout.states

    def forward(self, chunk: torch.Tensor, *tensors: torch.Tensor) -> tuple:
        states = []
        for s in self.template:
            values = {k: (v.clone() if self.start else None) if isinstance(v, torch.Tensor) else v
                      for k, v in vars(s).items()}
            states.append(State(**values))
        if not self.start:
            for (i, attr, _, _), t in zip(self.slots, tensors):
                if isinstance(getattr(self.template[i], attr), torch.Tensor):
                    setattr(states[i], attr, t)
        out = _run(self.side, states, chunk, self.final)
        nxt = []
        for i, attr, dtype, rank in self.slots:
            value = getattr(states[i], attr)
            nxt.append(_placeholder(dtype, rank) if self.final or not isinstance(value, torch.Tensor)
                       else value)
        return (out, *nxt)


def _slots(side: _Side, layouts: list) -> list:
    """(layer index, attribute, dtype, rank) of every state attribute that is a tensor in some layout."""
    found: dict = {}
    for layout in layouts:
        for i, s in enumerate(layout.states):
            for k, v in vars(s).items():
                if isinstance(v, torch.Tensor):
                    if found.setdefault((i, k), (v.dtype, v.dim())) != (v.dtype, v.dim()):
                        raise ExportError(f"{side.names[i]}.{k}: the state changes dtype or rank during a stream")
    return [(i, k, dtype, rank) for (i, k), (dtype, rank) in sorted(found.items())]


def _placeholder(dtype: torch.dtype, rank: int) -> torch.Tensor:
    """What stands for a state that is not a tensor in a layout: empty, of the slot's dtype and rank."""
    return torch.zeros((0,) * rank, dtype=dtype)


def _trace(step: _Step, args: tuple):
    """ONNX ModelProto of one branch, unoptimised: :func:`fold_constants` follows (the exporter's own
    optimiser moved tokens: 95 % of a small model's 6 kbps frames agreed with PyTorch, against 100 %)."""
    import logging
    import warnings

    from torch.onnx._internal.exporter import _registration
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir", "torch.export")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    # torch.onnx.export registers custom translations for real inputs only, and dispatches an op with
    # a complex input (the inverse FFT's) to translations marked complex: mark ours (private API)
    register = _registration.ONNXRegistry.register_op

    def register_op(self, target, function, is_complex: bool = False) -> None:
        register(self, target, function, is_complex or getattr(function, "complex_input", False))
    _registration.ONNXRegistry.register_op = register_op
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(step, args, dynamo=True, optimize=False, verbose=False,
                                        opset_version=OPSET, custom_translation_table=_onnx_translations())
    finally:
        _registration.ONNXRegistry.register_op = register
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    return program.model_proto


# -- one file per branch, the weights in one file beside them -----------------------------------------
EXTERNAL_MIN_BYTES = 1024   # tensors this large live in the weights file, once; smaller ones in the graph
ALIGN = 4096                # offsets in the weights file: page-aligned (onnxruntime may map them)


class _Weights:
    """The weights file of one variant: each distinct tensor once, referenced by every branch's graph."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = bytearray()
        self.offsets: dict = {}     # content key -> (offset, length)

    def externalize(self, tensor) -> None:
        """Move ``tensor``'s (a TensorProto) data into the file (written once per content)."""
        from onnx import TensorProto, numpy_helper
        array = np.ascontiguousarray(numpy_helper.to_array(tensor))
        raw = array.tobytes()
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha1(raw).hexdigest())
        if key not in self.offsets:
            self.data.extend(b"\0" * (-len(self.data) % ALIGN))
            self.offsets[key] = (len(self.data), len(raw))
            self.data.extend(raw)
        offset, length = self.offsets[key]
        dims, data_type, name = list(tensor.dims), tensor.data_type, tensor.name
        tensor.Clear()
        tensor.name, tensor.data_type = name, data_type
        tensor.dims.extend(dims)
        tensor.data_location = TensorProto.EXTERNAL
        for key_, value in (("location", self.name), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key_, value


def _finish(model, inputs: list, outputs: list, metadata: dict, weights: _Weights):
    """``model`` (one traced, folded branch) with the stream's value names (``inputs``: the chunk and
    every state slot, in the traced order; ``outputs`` likewise), the inputs it does not read removed,
    the exporter's annotations dropped, ``metadata`` set and its large tensors in ``weights``."""
    import onnx
    from onnx import helper, numpy_helper
    model = copy.deepcopy(model)
    g = model.graph
    rename = {v.name: new for v, new in zip(g.input, inputs)}
    nodes = []
    for node in g.node:
        value = [a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
        if node.op_type == "Constant" and value:    # an initializer: large ones go to the weights file
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value[0]), node.output[0]))
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"a traced branch holds a control-flow node ({node.op_type}); not supported")
        node.input[:] = [rename.get(x, x) for x in node.input]
        del node.metadata_props[:]   # the exporter's stack traces: most of a graph's size
        node.doc_string = ""
        nodes.append(node)
    for v, name in zip(g.output, outputs):   # (an output may be an input or a constant as it is)
        nodes.append(helper.make_node("Identity", [rename.get(v.name, v.name)], [name]))
        v.name = name
    del g.node[:]
    g.node.extend(nodes)
    read = {x for node in g.node for x in node.input}
    kept = [v for v in g.input if rename[v.name] in read]
    for v in kept:
        v.name = rename[v.name]
    del g.input[:]
    g.input.extend(kept)
    del g.value_info[:]
    del model.metadata_props[:]
    for k, value in metadata.items():
        model.metadata_props.add(key=k, value=str(value))
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    for tensor in g.initializer:
        if numpy_helper.to_array(tensor).nbytes >= EXTERNAL_MIN_BYTES:
            weights.externalize(tensor)
    return model


# -- the export ---------------------------------------------------------------------------------------
def _sides(codec, bitrates: list[int]) -> list[_Side]:
    """The encoder and decoder of ``codec`` as streaming functions with example chunks."""
    gen = codec.generator
    n_stages = codec.n_stages
    names = {m: n for n, m in gen.named_modules()}
    stages = sorted({codec.stages_for_bitrate(b) for b in bitrates})
    sides = []
    for name, part, fn in (("encoder", codec.encoder, lambda x: codec._tokens(x, n_stages)),
                           ("decoder", codec.decoder, codec._synthesize)):
        side = _Side(name, gen, fn, "audio" if name == "encoder" else "tokens",
                     "tokens" if name == "encoder" else "audio",
                     codec.hop_length if name == "encoder" else 1, {})
        side.layers = [m for m in part.modules() if isinstance(m, StreamingModule)]
        side.names = [names[m] for m in side.layers]
        sides.append(side)
    sides[0].rows = [1]
    sides[1].rows = stages
    return sides


def _examples(side: _Side, codec, chunk_frames: list) -> list:
    kinds = []
    g = torch.Generator().manual_seed(0)
    for rows in side.rows:
        for frames in [0, *chunk_frames]:
            if side.name == "encoder":
                chunk = 0.1 * torch.randn(1, 1, frames * codec.hop_length, generator=g)
            else:
                chunk = torch.randint(0, (1 << codec.bits_per_index), (1, rows, frames), generator=g)
            side.chunks[rows, frames] = chunk
            kinds.append((rows, frames))
    return kinds


def export_onnx(codec, out_dir: str | Path, chunk_frames: tuple[int, ...] = DEFAULT_CHUNK_FRAMES,
                variants: tuple[str, ...] = ("float32",), bitrates_bps: list[int] | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Write one folder per variant (``float32/``, ``int8/``: a graph per branch, ``encoder.K.onnx`` and
    ``decoder.K.onnx``, and the weights they share, ``weights.bin``) and the sidecar
    ``lrac-onnx.json`` into ``out_dir``; returns the sidecar.

    Args:
        codec: a :class:`~lrac.codec.Codec` (its send side runs in float32 for the export; restored after).
        chunk_frames: the chunk sizes (frames) the graphs take; 1 and 0 (the flush) are always added.
        variants: ``float32`` and/or ``int8`` (weights of the matrix products in 8 bits,
            onnxruntime's dynamic quantisation; see :func:`quantize_int8`).
        bitrates_bps: the bitrates the decoder graphs take (default: all the codec's; fewer make
            fewer graphs, exported faster).
        log: called with one line per step (progress), or None.
    """
    bitrates = sorted(bitrates_bps or codec.bitrates_bps)
    for b in bitrates:
        codec.stages_for_bitrate(b)     # ValueError listing the valid ones
    if any(int(n) != n or n < 1 for n in chunk_frames):
        raise ValueError(f"chunk sizes must be whole frames >= 1, got {list(chunk_frames)}")
    chunk_frames = sorted({1, *(int(n) for n in chunk_frames)})   # 1: a stream's last frames
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; variants: {', '.join(VARIANTS)}")
    say = log or (lambda line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_exact = codec.encode_dtype == torch.float64
    codec.set_exact(False)
    training = codec.generator.training
    codec.generator.eval()
    # the engine decodes whole streams, no lost frames: no concealment memory in its graphs
    extrapolating = [m for m in codec.generator.modules() if getattr(m, "extrapolates", False)]
    for m in extrapolating:
        m.extrapolates = False
    sidecar = {"format": ONNX_FORMAT, "version": FORMAT_VERSION, "model_id": codec.model_id.hex(),
               "model_name": codec.config.name, "note": codec.note,
               "sample_rate": codec.sample_rate, "hop_length": codec.hop_length,
               "bits_per_index": codec.bits_per_index, "codebook_size": (1 << codec.bits_per_index),
               "n_stages": codec.n_stages,
               "bitrates_bps": {str(b): codec.stages_for_bitrate(b) for b in bitrates},
               "chunk_frames": chunk_frames, "variants": list(variants), "files": {}}
    sides = []
    try:
        for side in _sides(codec, bitrates):
            start = time.perf_counter()
            kinds = _examples(side, codec, chunk_frames)
            layouts, table = _explore(side, kinds)
            slots = _slots(side, layouts)
            branches = [(p, kind) for p in range(len(layouts)) for kind in kinds]
            say(f"{side.name}: {len(layouts)} state layouts, {len(branches)} branches to trace")
            traced = []   # each branch traced, then folded (constant subgraphs computed once)
            for p, kind in branches:
                step = _Step(side, layouts[p], slots, final=kind[1] == 0, start=p == 0)
                args = (side.chunks[kind], *[
                    getattr(layouts[p].states[i], a) if isinstance(getattr(layouts[p].states[i], a), torch.Tensor)
                    else _placeholder(dtype, rank) for i, a, dtype, rank in slots])
                traced.append(fold_constants(_trace(step, args)))
            say(f"{side.name}: traced in {time.perf_counter() - start:.0f} s")
            states = [f"state.{side.names[i]}.{a}" for i, a, *_ in slots]
            sidecar[side.name] = {
                "input": side.chunk_name, "output": side.output_name, "layouts": len(layouts),
                "states": [{"name": n, "dtype": str(dtype).replace("torch.", ""), "rank": rank}
                           for n, (_, _, dtype, rank) in zip(states, slots)],
                "branches": [{"layout": p, "rows": rows, "frames": frames, "next": table[p, (rows, frames)],
                              "graph": f"{side.name}.{b}.onnx"}
                             for b, (p, (rows, frames)) in enumerate(branches)]}
            sides.append((side, traced, states))
        candidates = int8_candidates(codec.generator)
        for variant in variants:
            folder = out / variant
            folder.mkdir(exist_ok=True)
            weights = _Weights(WEIGHTS)
            for side, traced, states in sides:
                for b, model in enumerate(traced):
                    if variant == "int8":
                        model = quantize_int8(model, candidates)
                    metadata = {"lrac.format": ONNX_FORMAT, "lrac.model_id": codec.model_id.hex(),
                                "lrac.side": side.name, "lrac.variant": variant, "lrac.branch": b}
                    model = _finish(model, [side.chunk_name, *states],
                                    [side.output_name, *(f"next.{n}" for n in states)], metadata, weights)
                    _write(out, f"{variant}/{side.name}.{b}.onnx", model.SerializeToString(), sidecar)
            _write(out, f"{variant}/{WEIGHTS}", bytes(weights.data), sidecar)
            say(f"wrote {folder}: {sum(len(s[1]) for s in sides)} graphs, {len(weights.data) / 1e6:.1f} MB of weights")
    finally:
        codec.set_exact(was_exact)
        codec.generator.train(training)
        for m in extrapolating:
            m.extrapolates = True
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def _write(out: Path, name: str, data: bytes, sidecar: dict) -> None:
    (out / name).write_bytes(data)
    sidecar["files"][name] = hashlib.sha256(data).hexdigest()


VARIANTS = ("float32", "int8")


def _ort_pass(model, run: Callable[[Path, Path], None]):
    """``model`` through ``run(src_path, dst_path)`` (a tool that reads and writes files)."""
    import tempfile

    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        run(src, dst)
        return onnx.load(dst)


def fold_constants(model):
    """``model`` after onnxruntime's basic (portable) graph optimisations: constant folding (e.g. the
    transposed weights of every linear layer), redundant nodes removed; standard ONNX ops only."""
    import onnxruntime as ort

    def run(src: Path, dst: Path) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        options.log_severity_level = 3
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return _ort_pass(model, run)


INT8_MIN_WEIGHTS = 4096   # smaller matrices (the quantiser's 128 x 5 projections) stay float32


def _weight_key(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def int8_candidates(module: nn.Module) -> set:
    """Keys of the weights :func:`quantize_int8` may store in 8 bits: the linear layers of ``module``
    with at least :data:`INT8_MIN_WEIGHTS` weights (either orientation: the export may transpose
    them). Not the DFT matrices of the export's own FFTs: spectra need float precision."""
    keys = set()
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.weight.numel() >= INT8_MIN_WEIGHTS:
            w = m.weight.detach().float().cpu().numpy()
            keys |= {_weight_key(w), _weight_key(w.T)}
    return keys


def quantize_int8(model, candidates: set, per_channel: bool = True):
    """``model`` with the weights of its linear layers (``candidates``, :func:`int8_candidates`) in
    int8: onnxruntime's dynamic quantisation, one weight scale per output channel, activations
    quantised per call. Gemm nodes become MatMul + Add first, which the dynamic quantiser handles."""
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = copy.deepcopy(model)
    g = model.graph
    weights = {t.name: t for t in g.initializer}
    nodes, chosen = [], []
    for j, node in enumerate(g.node):
        node.name = f"n{j}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type == "Gemm" and node.input[1] in weights and not attrs.get("transA", 0)
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0):
            w = node.input[1]
            if attrs.get("transB", 0):
                t = weights[w]
                w = f"{t.name}__t"
                if w not in weights:
                    weights[w] = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(t).T), w)
                    g.initializer.append(weights[w])
            gemm = node
            product = f"{gemm.output[0]}__mm" if len(gemm.input) > 2 else gemm.output[0]
            node = helper.make_node("MatMul", [gemm.input[0], w], [product], name=f"n{j}_mm")
            nodes.append(node)
            if len(gemm.input) > 2:
                nodes.append(helper.make_node("Add", [product, gemm.input[2]], [gemm.output[0]],
                                              name=f"n{j}_add"))
        else:
            nodes.append(node)
        if (node.op_type == "MatMul" and node.input[1] in weights
                and _weight_key(numpy_helper.to_array(weights[node.input[1]])) in candidates):
            chosen.append(node.name)
    del g.node[:]
    g.node.extend(nodes)
    if not chosen:
        return model
    import logging
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)    # the quantiser's advice to pre-process: the graph is folded already
    try:
        return _ort_pass(model, lambda src, dst: quantize_dynamic(
            src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
            nodes_to_quantize=chosen, per_channel=per_channel))
    finally:
        root.setLevel(level)

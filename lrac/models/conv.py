"""Causal / look-ahead convolutions and residual units that stream exactly.

Padding convention (spec §2.1): a conv with effective kernel ``eff_k = (k - 1) * d + 1`` and stride
``s`` pads ``pad = eff_k - s`` zeros. A causal conv puts them all on the left; a look-ahead conv puts
``pad // 2`` on the right, which is its look-ahead in samples at its *input* rate. Signals are
``[B, C, T]`` with ``T`` a multiple of the stride (the codec pads to whole frames first), so the output
has ``T // s`` samples, offline and streaming alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from .streaming import State, StreamingModule, time_cat


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrisation in ``module`` by its plain weight (in place).

    Inference then costs one conv per layer instead of recomputing ``g * v / |v|`` each call."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


def fast_layers() -> bool:
    """True while autograd records (training): then :class:`PadConv1d`, 1x1 convs as matmuls and
    in-place ELUs replace the plain torch layers, the same function and gradients, faster on CPU
    (tests/test_conv.py compares them). Inference runs the plain layers."""
    return torch.is_grad_enabled()


def _pad_time(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``F.pad(x, (left, right))`` for ``[B, C, T]``, about 2x faster: F.pad fills the whole
    output with zeros before copying ``x`` in, and copies even when nothing is padded."""
    if not left and not right:
        return x
    parts = [x.new_zeros(*x.shape[:-1], left), x, x.new_zeros(*x.shape[:-1], right)]
    return torch.cat([p for p in parts if p.shape[-1]], -1)


class PadConv1d(torch.autograd.Function):
    """``conv1d(pad(x, (pad_left, pad_right)), weight, bias, dilation=d)``, stride 1, groups 1,
    with a faster backward on CPU.

    The input gradient of a stride-1 conv is itself a stride-1 conv: of the output gradient, padded
    ``(pad_right, pad_left)``, with the kernel flipped in time and transposed to ``[C_in, C_out, k]``.
    oneDNN's backward-data kernel computes the same 2-10x slower than its forward kernel (1 CPU
    thread, the SEANet shapes), so the backward calls the forward kernel instead.
    Shapes: ``x [B, C_in, T]``, ``weight [C_out, C_in, k]``, ``bias [C_out]`` -> ``[B, C_out, T']``
    with ``T' = T + pad_left + pad_right - (k - 1) * d``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                pad_left: int, pad_right: int, dilation: int) -> torch.Tensor:
        xp = _pad_time(x, pad_left, pad_right)
        ctx.save_for_backward(xp, weight)
        ctx.pads, ctx.dilation, ctx.has_bias = (pad_left, pad_right), dilation, bias is not None
        return F.conv1d(xp, weight, bias, dilation=dilation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xp, weight = ctx.saved_tensors
        pad_left, pad_right = ctx.pads
        d = ctx.dilation
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # y[t] reads xp[t + j*d] = x[t + j*d - pad_left], hence the swapped pads.
            grad_x = F.conv1d(_pad_time(grad, pad_right, pad_left), weight.flip(-1).transpose(0, 1),
                              dilation=d)
        c_in, k = weight.shape[1:]
        if ctx.needs_input_grad[1] and c_in <= 8 and k >= 5:
            # Few input channels, long kernel: as a conv over time with the batch as channels,
            # grad_w[o, i, j] = sum_{b, t} grad[b, o, t] * xp[b, i, t + j*d], 1.5-2x faster here.
            grad_w = F.conv1d(xp.transpose(0, 1), grad.transpose(0, 1), stride=d).transpose(0, 1)
            grad_b = grad.sum((0, 2)) if ctx.needs_input_grad[2] else None
        elif ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, xp, weight, [weight.shape[0]] if ctx.has_bias else None, [1], [0], [d], False,
                [0], 1, [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_x, grad_w, grad_b, None, None, None


def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, with each ELU that follows a :class:`Residual` block applied in place when
    :func:`fast_layers`: the block's output ``x + branch`` is a fresh tensor that nothing else
    reads, and the in-place ELU's backward uses its output instead of recomputing ``exp``."""
    prev = None
    for layer in layers:
        if type(layer) is nn.ELU and isinstance(prev, Residual) and fast_layers():
            x = F.elu(x, layer.alpha, inplace=True)
        else:
            x = layer(x)
        prev = layer
    return x


class DepthwiseConv1d(nn.Conv1d):
    """Depthwise ``nn.Conv1d`` (groups = channels) that computes short inputs as one batched matmul.

    CPU kernels for grouped convolutions carry a large fixed cost (about 1 ms a call in float64),
    which dominates streaming in 10 ms chunks; the windows of a short input times the taps, as a
    matmul over channels, are 5x (float32) to 100x (float64) faster there, and 3x faster than a
    sum over the taps one by one. Long inputs (training, one-pass coding) keep the
    library kernel, which is faster there. Being an ``nn.Conv1d``, it is counted by the complexity
    hooks like any other conv."""

    short_input = 64  # samples; below this the matmul wins (measured on this project's CPU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > self.short_input or self.stride[0] != 1:
            return super().forward(x)
        d, k = self.dilation[0], self.kernel_size[0]
        span = (k - 1) * d + 1
        # [B, C, T_out, k] (one output: the same view as unfold's, which an exported graph gathers)
        windows = x[..., None, ::d] if x.shape[-1] == span else x.unfold(-1, span, 1)[..., ::d]
        if torch.compiler.is_exporting():  # ONNX Runtime: products and a sum beat its batched matmul
            y = (windows * self.weight[:, None, 0, :]).sum(-1)
        else:
            y = torch.matmul(windows, self.weight[:, 0, :, None])[..., 0]  # [C, k, 1] per channel
        return y if self.bias is None else y + self.bias[:, None]


class SConv1d(StreamingModule):
    """Conv1d with weight norm, causal or with bounded look-ahead, streaming-aware.

    Args:
        lookahead: put ``pad // 2`` of the padding on the right (non-causal conv).
        groups: as ``nn.Conv1d`` (``groups = channels`` gives a depthwise conv).
        pad_right: exact look-ahead in input samples (``0 <= pad_right <= pad``); overrides
            ``lookahead`` when given.
    Shapes: ``[B, C_in, T] -> [B, C_out, T // stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, lookahead: bool = False, weight_norm: bool = True,
                 groups: int = 1, pad_right: int | None = None) -> None:
        super().__init__()
        depthwise = groups > 1 and groups == in_channels == out_channels
        conv = (DepthwiseConv1d if depthwise else nn.Conv1d)(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups)
        self.conv = parametrizations.weight_norm(conv) if weight_norm else conv
        self.stride = stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        pad = max(self.effective_kernel - stride, 0)
        if pad_right is not None and not 0 <= pad_right <= pad:
            raise ValueError(f"pad_right={pad_right} must be in 0..{pad} for kernel {kernel_size}, "
                             f"dilation {dilation}, stride {stride}")
        self.pad_right = pad_right if pad_right is not None else (pad // 2 if lookahead else 0)
        self.pad_left = pad - self.pad_right

    @property
    def lookahead_samples(self) -> int:
        """Future input samples needed per output sample (at this layer's input rate)."""
        return self.pad_right

    def init_state(self, batch_size: int) -> State:
        w = self.conv.weight
        return State(buffer=w.new_zeros(batch_size, self.conv.in_channels, self.pad_left))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.stream_state
        if state is None:
            if fast_layers() and self.stride == 1 and self.conv.groups == 1:
                if self.effective_kernel == 1 and self.conv.bias is not None:
                    # A 1x1 conv is a batched matmul; torch runs it through its slow conv2d path.
                    w = self.conv.weight[:, :, 0]
                    return torch.baddbmm(self.conv.bias[:, None], w.expand(x.shape[0], -1, -1), x)
                return PadConv1d.apply(x, self.conv.weight, self.conv.bias, self.pad_left, self.pad_right,
                                       self.conv.dilation[0])
            return self.conv(F.pad(x, (self.pad_left, self.pad_right)))
        buf = time_cat(state.buffer, x)
        if state.final and self.pad_right:
            buf = F.pad(buf, (0, self.pad_right))
        n_out = (buf.shape[-1] - self.effective_kernel) // self.stride + 1
        if n_out <= 0:
            state.buffer = buf
            return buf.new_zeros(buf.shape[0], self.conv.out_channels, 0)
        used = (n_out - 1) * self.stride + self.effective_kernel
        y = self.conv(buf[..., :used])
        state.buffer = buf[..., n_out * self.stride:]
        return y


class SConvTranspose1d(StreamingModule):
    """Causal transposed conv with weight norm: ``[B, C_in, T] -> [B, C_out, T * stride]``.

    The ``kernel - stride`` overlapping samples at the end are trimmed offline (all on the right,
    spec §2.1) and carried to the next chunk when streaming. With kernel = stride nothing overlaps.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 weight_norm: bool = True) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"transposed conv kernel {kernel_size} < stride {stride}")
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.convtr = parametrizations.weight_norm(conv) if weight_norm else conv
        self.stride = stride
        self.overlap = kernel_size - stride

    @property
    def lookahead_samples(self) -> float:
        """Latency of the overlap, in input samples: an output sample is final only once the
        ``overlap`` samples after it have been summed in from the next input step."""
        return self.overlap / self.stride

    def init_state(self, batch_size: int) -> State:
        w = self.convtr.weight
        return State(tail=w.new_zeros(batch_size, self.convtr.out_channels, self.overlap))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0)
        state = self.stream_state
        if state is None or self.overlap == 0:
            y = self.convtr(x)
            return y[..., : x.shape[-1] * self.stride]
        # Overlap-add without the bias so that the carried tail does not count it twice.
        bias = self.convtr.bias
        y = F.conv_transpose1d(x, self.convtr.weight, None, stride=self.stride)
        y[..., : self.overlap] += state.tail
        n = x.shape[-1] * self.stride
        state.tail = y[..., n:].clone()
        return y[..., :n] + bias[:, None]


class Residual(StreamingModule):
    """Base of ``y = x + branch(x)`` blocks whose branch may hold samples back while streaming.

    Subclasses compute the branch and return :meth:`add_skip` ``(x, branch)``. Offline both have the
    same length; when streaming, the skip path keeps the input samples the branch has not produced
    yet, so the sum lines up sample for sample."""

    def init_state(self, batch_size: int) -> State:
        return State(skip=None)

    def add_skip(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        state = self.stream_state
        if state is None:
            return x + y
        skip = x if state.skip is None else time_cat(state.skip, x)
        n = y.shape[-1]
        state.skip = skip[..., n:]
        return skip[..., :n] + y


class ResidualUnit(Residual):
    """Pre-activation residual unit ``y = x + conv2(elu(conv1(elu(x))))`` (identity skip).

    Each conv has its own look-ahead flag."""

    def __init__(self, channels: int, kernels: list[int], dilations: list[int],
                 lookahead: list[bool], activation: type[nn.Module] = nn.ELU) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k, d, la in zip(kernels, dilations, lookahead):
            layers += [activation(), SConv1d(channels, channels, k, dilation=d, lookahead=la)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fast_layers():
            return self.add_skip(x, self.block(x))
        # The conv outputs are read by nothing but the next ELU: activate them in place.
        h = x
        for i, layer in enumerate(self.block):
            h = F.elu(h, layer.alpha, inplace=True) if i and type(layer) is nn.ELU else layer(h)
        return self.add_skip(x, h)

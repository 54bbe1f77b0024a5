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


class DepthwiseConv1d(nn.Conv1d):
    """Depthwise ``nn.Conv1d`` (groups = channels) that sums its taps directly on short inputs.

    CPU kernels for grouped convolutions carry a large fixed cost (about 4 ms a call in float64),
    which dominates streaming in 10 ms chunks; ``k`` multiply-adds over the input are 10x faster
    there. Long inputs (training, one-pass coding) keep the library kernel, which is faster there.
    Being an ``nn.Conv1d``, it is counted by the complexity hooks like any other conv."""

    short_input = 64  # samples; below this the tap sum wins (measured on this project's CPU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > self.short_input or self.stride[0] != 1:
            return super().forward(x)
        w = self.weight[:, 0]  # [C, k]
        d = self.dilation[0]
        n = x.shape[-1] - (w.shape[-1] - 1) * d
        y = x[..., :n] * w[:, :1]
        for i in range(1, w.shape[-1]):
            y = y + x[..., i * d:i * d + n] * w[:, i:i + 1]
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
        return self.add_skip(x, self.block(x))

"""The faster training kernels of lrac.models.conv (used while autograd records) compute the same
function and gradients as the plain torch layers (what ESPnet's SEANet runs, and lrac at inference)."""

import pytest
import torch
import torch.nn.functional as F

from lrac.config import load_config
from lrac.models.conv import PadConv1d, ResidualUnit
from lrac.models.seanet import build_seanet


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("c_in, c_out, k, d, pad_left, pad_right", [
    (8, 8, 7, 27, 162, 0),      # causal, few channels: weight gradient as a conv over time
    (8, 1, 21, 1, 20, 0),       # the decoder's output conv
    (16, 12, 5, 3, 6, 6),       # look-ahead
    (32, 32, 3, 1, 2, 0),
    (4, 6, 1, 1, 0, 0),         # nothing padded
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pad_conv1d_equals_pad_then_conv(c_in, c_out, k, d, pad_left, pad_right, dtype):
    gen = torch.Generator().manual_seed(k * 100 + d)
    x = torch.randn(3, c_in, 500, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(c_out, c_in, k, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(c_out, generator=gen, dtype=dtype, requires_grad=True)
    ref = F.conv1d(F.pad(x, (pad_left, pad_right)), w, b, dilation=d)
    out = PadConv1d.apply(x, w, b, pad_left, pad_right, d)
    g = torch.randn(ref.shape, generator=gen, dtype=dtype)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    grads = torch.autograd.grad(out, (x, w, b), g)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.equal(out, ref)  # the forward is the same kernel call
    for a, r in zip(grads, ref_grads):
        assert a.shape == r.shape
        assert _rel_err(a, r) <= tol


def test_residual_unit_keeps_its_input():
    """The in-place ELU acts on conv outputs only, never on the skip input."""
    unit = ResidualUnit(4, [5, 1], [3, 1], [False, False])
    x = torch.randn(2, 4, 300, requires_grad=True)
    x0 = x.detach().clone()
    y = unit(x)
    assert torch.equal(x.detach(), x0)
    with torch.no_grad():   # the plain layers
        assert _rel_err(y, unit(x)) <= 1e-6


@pytest.mark.parametrize("preset", ["baseline-t1", "baseline-t2"])
def test_seanet_fast_layers_equal_plain_layers(preset):
    """Encoder + decoder: the same output with the faster kernels (autograd on) as with the plain
    layers (off); float32, so the differences are float rounding only. The gradients of the faster
    kernels are checked layer by layer above."""
    torch.manual_seed(0)
    enc, dec = build_seanet(load_config(preset).model)
    x = torch.randn(2, 1, enc.hop_length * 12) * 0.3
    y = dec(enc(x.clone().requires_grad_()))
    with torch.no_grad():
        y_plain = dec(enc(x))
    assert y.requires_grad and _rel_err(y, y_plain) <= 1e-5

"""The MS-STFT discriminator computes exactly spec §3.1 (checked against a plain re-computation)."""

import numpy as np
import torch
import torch.nn.functional as F

from lrac.models.discriminators import MultiScaleSTFTDiscriminator

torch.set_num_threads(1)


def _plain_scale(disc, x: torch.Tensor) -> list[torch.Tensor]:
    """One scale computed the direct way: numpy STFT / window norm, NCHW convs, weight = g v / |v|."""
    n_fft, hop = disc.n_fft, disc.n_fft // 4
    sig = x[0, 0].double().numpy()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([sig[i:i + n_fft] * window for i in range(0, len(sig) - n_fft + 1, hop)])
    spec = np.fft.rfft(frames, axis=1) / np.sqrt((window ** 2).sum())   # [frames, bins]
    z = torch.from_numpy(np.stack([spec.real, spec.imag])[None]).float()  # [1, 2, frames, bins]

    def weight(conv):
        if hasattr(conv, "parametrizations"):
            g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
            return g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return conv.weight

    feats = []
    for conv in disc.convs:
        z = F.leaky_relu(F.conv2d(z, weight(conv), conv.bias, conv.stride, conv.padding, conv.dilation), 0.1)
        feats.append(z)
    post = disc.conv_post
    feats.append(F.conv2d(z, weight(post), post.bias, post.stride, post.padding, post.dilation))
    return feats


def test_matches_plain_computation_and_spec_shapes():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(n_ffts=[128, 512], filters=16)
    # perturb the weight-norm magnitudes so that g != |v| is exercised
    with torch.no_grad():
        for p in disc.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(1, 1, 6000) * 0.3
    outs = disc(x)
    assert len(outs) == 2
    for scale, out in zip(disc.discriminators, outs):
        ref = _plain_scale(scale, x)
        assert len(out) == 6  # 5 activations + logits
        for a, b in zip(out, ref):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # frequency axis: bins, then /2 three times (stride 2 over frequency), time axis untouched
    frames = (6000 - 512) // 128 + 1
    assert [t.shape[-1] for t in outs[1]] == [257, 129, 65, 33, 33, 33]
    assert all(t.shape[-2] == frames for t in outs[1])


def test_baseline_size_and_weight_norm_placement():
    disc = MultiScaleSTFTDiscriminator()
    assert len(disc.discriminators) == 5
    assert sum(p.numel() for p in disc.parameters()) == 120970  # "about 121 k" (spec §3.1)
    for scale in disc.discriminators:
        assert not hasattr(scale.convs[0], "parametrizations")  # first conv: no weight norm
        assert all(hasattr(c, "parametrizations") for c in list(scale.convs)[1:] + [scale.conv_post])

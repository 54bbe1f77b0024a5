"""Losses of spec §3.2: the mel filterbank against librosa's numbers, the mel loss against an
independent numpy computation, and the hinge / feature-matching formulas."""

import math

import numpy as np
import pytest
import torch

from lrac.mel import mel_filterbank
from lrac.train.losses import (BandMagnitudeLoss, EnvelopeCorrelationLoss, MultiScaleMelLoss,
                               ReconstructionLoss, discriminator_adversarial_loss, feature_matching_loss,
                               generator_adversarial_loss)

torch.set_num_threads(1)


def test_filterbank_matches_librosa_slaney():
    # Reference values from librosa 0.11 ``librosa.filters.mel(sr=24000, n_fft=..., n_mels=...)``.
    sums_64 = [0.00254924665, 0.00254924688, 0.00261345948, 0.00264438917, 0.0027087701,
               0.00260906643, 0.00271364301, 0.00264869537, 0.00267474353, 0.00266063353]
    fb = mel_filterbank(24000, 64, 10)
    assert fb.shape == (10, 33)
    np.testing.assert_allclose(fb.sum(1), sums_64, rtol=1e-6)
    fb = mel_filterbank(24000, 1024, 160)
    row = fb[100]
    assert list(np.nonzero(row)[0]) == [136, 137, 138, 139, 140, 141]
    np.testing.assert_allclose(row[136:142], [0.00420935545, 0.00895109214, 0.0136928288,
                                              0.00994977448, 0.00531047303, 0.000671171991], rtol=1e-6)


def _numpy_log_mel(x: np.ndarray, n_fft: int, n_mels: int, sr: int = 24000) -> np.ndarray:
    """Independent log-mel: reflect pad n_fft/2, periodic Hann, hop n_fft/4, |rfft|, mel, ln."""
    hop = n_fft // 4
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(n_frames)])
    mag = np.sqrt(np.maximum(np.abs(np.fft.rfft(frames, axis=1)) ** 2, 1e-10))
    mel = mag @ mel_filterbank(sr, n_fft, n_mels).T.astype(np.float64)
    return np.log(np.maximum(mel, 1e-10))


def test_log_mel_matches_independent_numpy():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(4800) * 0.1).astype(np.float32)
    loss = MultiScaleMelLoss()
    for n_fft, n_mels in [(64, 10), (1024, 160)]:
        ours = loss.log_mel(torch.from_numpy(x)[None, None], n_fft)[0].double().numpy()
        ref = _numpy_log_mel(x.astype(np.float64), n_fft, n_mels)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_mel_loss_combines_scales_with_sqrt_weights():
    torch.manual_seed(0)
    y = torch.randn(2, 1, 4800) * 0.1
    y_hat = y + 0.05 * torch.randn_like(y)
    loss = MultiScaleMelLoss(n_ffts=[64, 256], n_mels=[10, 40])
    expected = 0.0
    for n_fft in (64, 256):
        a, b = loss.log_mel(y_hat, n_fft), loss.log_mel(y, n_fft)
        expected += (a - b).abs().mean() + math.sqrt(n_fft - 1) * ((a - b) ** 2).mean()
    expected /= (math.sqrt(63) + 1) + (math.sqrt(255) + 1)
    assert torch.allclose(loss(y_hat, y), expected, rtol=1e-5)
    assert loss(y, y).item() == 0.0


def test_mel_loss_gradient_reaches_prediction_only():
    y = torch.randn(1, 1, 2400) * 0.1
    y_hat = (y + 0.1 * torch.randn_like(y)).requires_grad_(True)
    y.requires_grad_(True)
    MultiScaleMelLoss()(y_hat, y).backward()
    assert y_hat.grad is not None and torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    assert y.grad is None  # the reference side runs without a graph


def test_mel_loss_refuses_missing_bins():
    with pytest.raises(ValueError, match="mel-bin count"):
        MultiScaleMelLoss(n_ffts=[64, 128, 256], n_mels=[10, 20])


def _outputs(values):
    """Fake discriminator outputs: each scale has one feature map then logits."""
    return [[torch.full((1, 2), f), torch.full((1, 3), lg)] for f, lg in values]


def test_hinge_losses():
    fake = _outputs([(0.0, 0.5), (0.0, -2.0)])
    real = _outputs([(0.0, 0.25), (0.0, 3.0)])
    assert generator_adversarial_loss(fake).item() == pytest.approx((-0.5 + 2.0) / 2)
    real_loss, fake_loss = discriminator_adversarial_loss(real, fake)
    assert real_loss.item() == pytest.approx((0.75 + 0.0) / 2)       # relu(1 - D(y))
    assert fake_loss.item() == pytest.approx((1.5 + 0.0) / 2)        # relu(1 + D(y_hat))


def test_feature_matching_sums_layers_including_logits_and_averages_scales():
    fake = _outputs([(1.0, 2.0), (0.0, 0.0)])
    real = _outputs([(0.5, 0.0), (0.0, 1.0)])
    # scale 0: |1-0.5| + |2-0| = 2.5; scale 1: 0 + 1 = 1; mean over scales = 1.75
    assert feature_matching_loss(fake, real).item() == pytest.approx(1.75)
    fake[0][0].requires_grad_(True)
    real[0][0].requires_grad_(True)
    feature_matching_loss(fake, real).backward()
    assert fake[0][0].grad is not None
    assert real[0][0].grad is None  # real features are constants


def test_feature_matching_gradient_equals_autograd_l1():
    torch.manual_seed(0)
    fake = [[torch.randn(2, 3, 5, 7, requires_grad=True) for _ in range(3)] for _ in range(2)]
    real = [[torch.randn(2, 3, 5, 7) for _ in range(3)] for _ in range(2)]
    feature_matching_loss(fake, real).backward()
    ours = [t.grad.clone() for scale in fake for t in scale]
    for scale in fake:
        for t in scale:
            t.grad = None
    expected = torch.stack([sum(torch.nn.functional.l1_loss(a, b) for a, b in zip(sh, s))
                            for sh, s in zip(fake, real)]).mean()
    expected.backward()
    assert torch.allclose(feature_matching_loss(fake, real), expected, rtol=1e-6)
    for g, scale_t in zip(ours, [t for scale in fake for t in scale]):
        torch.testing.assert_close(g, scale_t.grad, rtol=0, atol=1e-9)


def test_reconstruction_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    y = torch.randn(2, 1, 9600) * 0.1
    y_hat = y + 0.05 * torch.randn_like(y)
    both = ReconstructionLoss({"mel": 5.0, "estoi": 3.0})
    total, values = both(y_hat, y)
    assert set(values) == {"mel", "estoi"} and values["estoi"] > 0
    assert float(total) == pytest.approx(5.0 * float(values["mel"]) + 3.0 * float(values["estoi"]), rel=1e-6)
    assert float(values["mel"]) == pytest.approx(float(MultiScaleMelLoss()(y_hat, y)), rel=1e-6)
    mel_only = ReconstructionLoss({"mel": 5.0, "estoi": 0.0})          # a weight of 0: not computed
    assert set(mel_only(y_hat, y)[1]) == {"mel"} and set(mel_only.terms) == {"mel"}
    with pytest.raises(ValueError, match="train.lambda_estoi needs train.segment_samples >= 8960"):
        both.check_segment(4800)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        ReconstructionLoss({"phase": 1.0})


def test_the_two_mel_scales_share_one_filterbank():
    """The metrics' HTK scale and the losses' Slaney scale: both triangles of equal area."""
    for scale in ("slaney", "htk"):
        fb = mel_filterbank(24000, 16384, 40, scale=scale)   # bins fine enough to integrate
        areas = (fb * (12000 / 8192)).sum(1)
        np.testing.assert_allclose(areas, 1.0, rtol=0.01)   # (2 / width) x width / 2 = 1
    assert not np.allclose(mel_filterbank(24000, 512, 40, scale="htk"), mel_filterbank(24000, 512, 40))
    with pytest.raises(ValueError, match="mel scale"):
        mel_filterbank(24000, 512, 40, scale="bark")


def _modulated_harmonics(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A 150 Hz harmonic voice whose harmonics each move at their own syllable rate (conftest's
    ``speechlike`` moves all with one envelope, so its seeds differ only in noise): ``[1, 1, T]``."""
    sr = 24000
    t = torch.arange(int(seconds * sr)) / sr
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros_like(t)
    for k in range(1, 30):   # each harmonic with its own 2-6 Hz level modulation
        rate, phase = 2 + 4 * torch.rand((), generator=g), 6.3 * torch.rand((), generator=g)
        out += torch.cos(2 * math.pi * 150 * k * t) * (1.2 + torch.sin(2 * math.pi * rate * t + phase)) / k
    return 0.05 * out[None, None]


def test_envelope_correlation_scores_like_estoi():
    """1 on the reference itself and on a louder copy (ESTOI ignores scale), lower for another
    modulation of the same harmonics, and lower still with noise; gradients reach the prediction."""
    loss = EnvelopeCorrelationLoss()
    x = _modulated_harmonics()
    assert loss.score(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert loss.score(3 * x, x).item() == pytest.approx(1.0, abs=1e-5)
    other = loss.score(_modulated_harmonics(seed=1), x).item()
    noise = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    noisy = loss.score(x + noise, x).item()
    assert other < 0.9 and noisy < 0.9 and loss.score(x + 0.1 * noise, x).item() > noisy
    y_hat = (x + noise).requires_grad_(True)
    loss(y_hat, x).backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


def test_envelope_correlation_ignores_silence_and_refuses_short_chunks():
    loss = EnvelopeCorrelationLoss()
    silent = torch.zeros(2, 1, 24000)
    y_hat = torch.randn(2, 1, 24000, requires_grad=True)
    value = loss(y_hat, silent)   # every frame as loud as the loudest: segments kept, but finite
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(y_hat.grad).all()
    # a burst in the last quarter: the segments of the silent start do not count
    x = _modulated_harmonics()
    x[..., :18000] = 0
    assert loss.score(x, x).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="at least 8960 samples"):
        loss(torch.zeros(1, 1, 8000), torch.zeros(1, 1, 8000))


def test_band_magnitude_loss_sees_the_level_of_500_hz_to_1_khz_only():
    t = torch.arange(24000) / 24000
    ref = torch.sin(2 * math.pi * 700 * t)[None, None]
    loss = BandMagnitudeLoss()
    assert float(loss(ref, ref)) < 1e-6
    shifted = torch.sin(2 * math.pi * 700 * t + 1.0)[None, None]
    assert float(loss(shifted, ref)) < 0.05                       # a phase is no level error
    assert float(loss(0.5 * ref, ref)) > 0.1
    outside = torch.sin(2 * math.pi * 2000 * t)[None, None]
    assert float(loss(ref + outside, ref)) < 0.01

"""Training losses: the LRAC baseline's (spec §3.2: multi-scale mel, hinge adversarial, feature
matching), an ESTOI-like envelope correlation and a magnitude loss over 500 Hz - 1 kHz.

The generator loss is ``lambda_adv * adv + lambda_feat * fm + lambda_commit * commit`` plus the
weighted reconstruction losses of :data:`RECONSTRUCTION_LOSSES` (``lambda_mel * mel``, and each
other ``lambda_<name> * <name>`` whose weight is above 0); the baseline's weights are 1, 2, 10 and 5.
The commitment term comes from the quantizer. A new reconstruction loss is one entry in
:data:`RECONSTRUCTION_LOSSES` and a ``lambda_<name>`` in ``TrainConfig``.

Discriminator outputs are lists with one entry per scale, each entry ``[feature maps..., logits]``
as returned by :class:`lrac.models.discriminators.MultiScaleSTFTDiscriminator`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrac.mel import mel_filterbank

LOG_FLOOR = 1e-10  # clamp before the log, and on the power before the square root (as ESPnet)


# --------------------------------------------------------------------------------------------
# multi-scale mel loss
# --------------------------------------------------------------------------------------------


def stft_power(x: torch.Tensor, n_fft: int, window: torch.Tensor, hop: int | None = None) -> torch.Tensor:
    """Waveform ``[B, 1, T]`` or ``[B, T]`` -> power spectrogram ``[B, frames, n_fft // 2 + 1]``
    (window ``n_fft`` long, hop ``n_fft // 4`` unless given, ``center=True`` with reflect padding, as ESPnet)."""
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop or n_fft // 4, n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, return_complex=True)
    return torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)


class MultiScaleMelLoss(nn.Module):
    """ESPnet's multi-scale mel loss as the LRAC baseline configures it (spec §3.2).

    For each scale ``i`` (``n_fft = 2**i``, window = ``n_fft``, hop ``n_fft // 4``, Hann,
    ``center=True`` with reflect padding) the features are ``ln(clamp(M @ sqrt(clamp(|X|^2, 1e-10)),
    1e-10))`` with a Slaney mel matrix ``M`` from 0 Hz to Nyquist. The scale adds
    ``L1 + sqrt(2**i - 1) * MSE`` (means over all elements) and the sum is divided by
    ``sum_i (sqrt(2**i - 1) + 1)``.

    Args:
        sample_rate: audio rate in Hz (24000).
        n_ffts: FFT sizes, powers of two (64 ... 1024 in the baseline).
        n_mels: mel bands per scale (10, 20, 40, 80, 160 in the baseline).
    """

    def __init__(self, sample_rate: int = 24000, n_ffts: Sequence[int] = (64, 128, 256, 512, 1024),
                 n_mels: Sequence[int] = (10, 20, 40, 80, 160)) -> None:
        super().__init__()
        if len(n_mels) < len(n_ffts):
            raise ValueError(f"mel loss needs one mel-bin count per FFT size: n_ffts={list(n_ffts)}, "
                             f"n_mels={list(n_mels)}")
        self.n_ffts = [int(n) for n in n_ffts]
        self.alphas = [math.sqrt(n - 1) for n in self.n_ffts]   # sqrt(2**i - 1)
        self.total = sum(a + 1 for a in self.alphas)
        for n, m in zip(self.n_ffts, n_mels):
            # stored transposed, [bins, mels], so features come out as [B, frames, mels] by one matmul
            self.register_buffer(f"mel_{n}", torch.from_numpy(
                mel_filterbank(sample_rate, n, int(m)).T.astype(np.float32)), persistent=False)
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def log_mel(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        """Waveform ``[B, 1, T]`` or ``[B, T]`` -> log-mel features ``[B, frames, n_mels]``."""
        power = stft_power(x, n_fft, getattr(self, f"window_{n_fft}"))
        mel = power.clamp(min=LOG_FLOOR).sqrt() @ getattr(self, f"mel_{n_fft}")
        return mel.clamp(min=LOG_FLOOR).log()

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mel loss of generated ``y_hat`` against reference ``y`` (both ``[B, 1, T]``); a scalar."""
        loss = y_hat.new_zeros(())
        for n_fft, alpha in zip(self.n_ffts, self.alphas):
            mel_hat = self.log_mel(y_hat, n_fft)
            with torch.no_grad():
                mel_ref = self.log_mel(y, n_fft)
            loss = loss + F.l1_loss(mel_hat, mel_ref) + alpha * F.mse_loss(mel_hat, mel_ref)
        return loss / self.total


class EnvelopeCorrelationLoss(nn.Module):
    """``1 - ESTOI``-like score: correlation of short-time band envelopes, differentiable.

    Why: t1 version 13 lost ESTOI to Opus at 6 kbps below about 500 Hz, where its band envelopes
    correlated 0.76-0.85 with the reference against Opus's 0.90-0.92 (benchmarks/bands.py),
    while the mel loss, a distance of log levels, is close there. ESTOI (Jensen & Taal, 2016) scores
    exactly that correlation. As in ESTOI: 15 one-third-octave bands with centres from 150 Hz, the
    band magnitudes ``sqrt(sum |X|^2)`` of a Hann STFT (512 points at 24 kHz, hop 256: 10.7 ms
    against ESTOI's 12.8 ms), segments of ``segment_frames`` frames (36: 384 ms) at every frame,
    each segment's band rows then frame columns normalised to zero mean and unit norm, and the score
    the mean over segments of ``sum(A * B) / segment_frames``. ESTOI drops frames 40 dB below the
    loudest; here a segment counts only when at least half its reference frames are within 40 dB of
    the chunk's loudest frame (a batch of fixed-length chunks keeps its shape).
    """

    def __init__(self, sample_rate: int = 24000, n_fft: int = 512, segment_frames: int = 36,
                 n_bands: int = 15, low_hz: float = 150.0, range_db: float = 40.0) -> None:
        super().__init__()
        self.n_fft, self.segment_frames, self.range_db = n_fft, segment_frames, range_db
        freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
        centres = low_hz * 2.0 ** (np.arange(n_bands) / 3.0)
        lo, hi = centres * 2.0 ** (-1 / 6), centres * 2.0 ** (1 / 6)
        bands = ((freqs[:, None] >= lo) & (freqs[:, None] < hi)).astype(np.float32)   # [bins, bands]
        self.register_buffer("bands", torch.from_numpy(bands), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def min_samples(self) -> int:
        """The shortest chunk that holds one segment (``center=True`` gives ``T // hop + 1`` frames)."""
        return (self.segment_frames - 1) * (self.n_fft // 2)

    def envelopes(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, T]`` -> band magnitudes ``[B, frames, bands]``."""
        power = stft_power(x, self.n_fft, self.window, hop=self.n_fft // 2)   # [B, frames, bins]
        return (power @ self.bands + 1e-10).sqrt()

    def score(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean envelope correlation of ``y_hat`` with ``y`` (both ``[B, 1, T]``), a scalar in [-1, 1]."""
        if y.shape[-1] < self.min_samples:
            raise ValueError(f"envelope correlation needs chunks of at least {self.min_samples} "
                             f"samples, got {y.shape[-1]}")
        env_hat, env = self.envelopes(y_hat), self.envelopes(y)
        n = self.segment_frames
        with torch.no_grad():
            level_db = 10 * torch.log10(env.pow(2).sum(-1) + 1e-10)          # [B, frames]
            active = (level_db > level_db.amax(1, keepdim=True) - self.range_db).float()
            keep = active.unfold(1, n, 1).mean(-1) >= 0.5                     # [B, segments]

        def normalised(e: torch.Tensor) -> torch.Tensor:
            seg = e.unfold(1, n, 1)                                           # [B, segs, bands, n]
            seg = seg - seg.mean(-1, keepdim=True)
            seg = seg / (seg.norm(dim=-1, keepdim=True) + 1e-8)               # each band over time
            seg = seg - seg.mean(-2, keepdim=True)
            return seg / (seg.norm(dim=-2, keepdim=True) + 1e-8)              # each frame over bands

        corr = (normalised(env_hat) * normalised(env)).sum((-2, -1)) / n      # [B, segments]
        if not bool(keep.any()):
            return corr.new_ones(())   # nothing audible: nothing to match
        return corr[keep].mean()

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``1 - score``: 0 when every segment's envelopes match up to scale and offset."""
        return 1.0 - self.score(y_hat, y)


class BandMagnitudeLoss(nn.Module):
    """L1 between power-law compressed magnitudes ``|X|^0.3`` of the bins from 500 Hz to 1 kHz,
    relative to the reference's mean there, at a resolution that parts the harmonics (Hann window
    of 1024 samples, hop 256). Why: with its harmonics' amplitudes taken from the reference, the
    decoded 6 kbps band gains +0.11 PESQ-WB, with their phases +0.04 (decoder only, 25 validation
    clips, docs/results.md "Bounds"); in the multi-scale mel loss this band is a few of 310 bands.
    At weight 5 against the same run without it, 3,800 steps each from step 137020 (25 validation
    clips, 6 kbps): PESQ-WB +0.014 (p = 0.07), mel -0.022 dB (p = 8e-6), ESTOI -0.001, but the
    band's harmonics came no closer to the reference's (4.5 dB mean error against 4.4)."""

    def __init__(self, sample_rate: int = 24000, n_fft: int = 1024, band_hz: tuple[float, float] = (500.0, 1000.0),
                 power: float = 0.3) -> None:
        super().__init__()
        self.n_fft, self.power = n_fft, power
        freqs = torch.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
        band = (freqs >= band_hz[0]) & (freqs < band_hz[1])
        self.register_buffer("bins", torch.nonzero(band)[:, 0], persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """``|X|^power`` of the band, ``[B, frames, band bins]``."""
        return stft_power(x.float(), self.n_fft, self.window)[..., self.bins].clamp(min=LOG_FLOOR).pow(self.power / 2)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ref = self.magnitude(y).detach()
        return (self.magnitude(y_hat) - ref).abs().mean() / ref.mean().clamp(min=1e-8)


RECONSTRUCTION_LOSSES: dict[str, Callable[[int], nn.Module]] = {
    "mel": MultiScaleMelLoss,              # (sample_rate) -> module(y_hat, y) -> scalar
    "estoi": EnvelopeCorrelationLoss,
    "band_magnitude": BandMagnitudeLoss,
}


class ReconstructionLoss(nn.Module):
    """``sum_name weight[name] * loss_name(y_hat, y)`` over :data:`RECONSTRUCTION_LOSSES` whose
    weight (``train.lambda_<name>``) is above 0. Returns ``(total, {name: unweighted value})``.

    A loss that needs a minimum chunk length says so with a ``min_samples`` attribute, and
    :meth:`check_segment` refuses shorter training chunks, naming the weight."""

    def __init__(self, weights: dict[str, float], sample_rate: int = 24000) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(RECONSTRUCTION_LOSSES))
        if unknown:
            raise ValueError(f"unknown reconstruction loss(es) {unknown}; known: {sorted(RECONSTRUCTION_LOSSES)}")
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        self.terms = nn.ModuleDict({name: RECONSTRUCTION_LOSSES[name](sample_rate) for name in self.weights})

    def check_segment(self, samples: int) -> None:
        for name, term in self.terms.items():
            need = getattr(term, "min_samples", 0)
            if samples < need:
                raise ValueError(f"train.lambda_{name} needs train.segment_samples >= {need} "
                                 f"(one segment of the {name} loss), got {samples}")

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: term(y_hat, y) for name, term in self.terms.items()}
        total = sum((self.weights[name] * value for name, value in values.items()), y_hat.new_zeros(()))
        return total, values


# --------------------------------------------------------------------------------------------
# adversarial and feature matching (hinge GAN, averaged over discriminators)
# --------------------------------------------------------------------------------------------


def generator_adversarial_loss(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge generator loss ``mean_d(-mean(D_d(y_hat)))`` from the logits (last entry per scale)."""
    return torch.stack([-scale[-1].mean() for scale in fake]).mean()


def discriminator_adversarial_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge discriminator loss, averaged over scales.

    Returns:
        ``(real_loss, fake_loss)`` = ``mean_d(mean(relu(1 - D_d(y))))``, ``mean_d(mean(relu(1 + D_d(y_hat))))``;
        the discriminator minimises their sum.
    """
    real_loss = torch.stack([F.relu(1 - scale[-1]).mean() for scale in real]).mean()
    fake_loss = torch.stack([F.relu(1 + scale[-1]).mean() for scale in fake]).mean()
    return real_loss, fake_loss


class _L1ToConstant(torch.autograd.Function):
    """``mean(|a - b|)`` with ``b`` a constant; the same value and gradient as ``F.l1_loss(a, b.detach())``.

    Feature maps are the largest tensors of a training step (16 x frames x 1025 bins per chunk), so
    the number of passes over them matters on CPU: this keeps one difference tensor and builds the
    gradient ``sign(a - b) * g / N`` from it in two passes, where autograd's composite needs six."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b
        ctx.save_for_backward(diff)
        return torch.linalg.vector_norm(diff, ord=1) / diff.numel()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (diff,) = ctx.saved_tensors
        return torch.sgn(diff).mul_(grad / diff.numel()), None


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """``mean_d(sum_l L1(f_dl(y_hat), f_dl(y)))`` over every feature map *and* the logits of each scale.

    The real features are treated as constants (detached)."""
    per_scale = [sum(_L1ToConstant.apply(f_hat, f.detach()) for f_hat, f in zip(scale_hat, scale))
                 for scale_hat, scale in zip(fake, real)]
    return torch.stack(per_scale).mean()

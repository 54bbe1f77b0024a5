"""Training losses of the LRAC baseline (spec §3.2): multi-scale mel, hinge adversarial, feature matching;
and a phase-structure loss of our own (:class:`PhaseDerivativeLoss`, off in the baseline presets).

The generator loss is ``lambda_adv * adv + lambda_feat * fm + lambda_mel * mel + lambda_commit * commit``
(1, 2, 5, 10 in the baseline) ``+ lambda_phase * phase``; the commitment term comes from the quantizer.

Discriminator outputs are lists with one entry per scale, each entry ``[feature maps..., logits]``
as returned by :class:`lrac.models.discriminators.MultiScaleSTFTDiscriminator`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_FLOOR = 1e-10  # clamp before the log, and on the power before the square root (as ESPnet)


# --------------------------------------------------------------------------------------------
# mel filterbank (librosa.filters.mel with htk=False, norm="slaney"), numpy only
# --------------------------------------------------------------------------------------------

_F_SP = 200.0 / 3          # Hz per mel below the break frequency (Slaney's linear part)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel[log_part] = _MIN_LOG_MEL + np.log(hz[log_part] / _MIN_LOG_HZ) / _LOG_STEP
    return mel


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel[log_part] - _MIN_LOG_MEL))
    return hz


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters, area-normalised (Slaney), as ``librosa.filters.mel`` computes them.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` float32 weights; row ``m`` maps a magnitude spectrum to band ``m``.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(np.array([fmin]))[0],
                                            hz_to_mel_slaney(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]   # equal area per band
    return weights.astype(np.float32)


# --------------------------------------------------------------------------------------------
# multi-scale mel loss
# --------------------------------------------------------------------------------------------


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
                slaney_mel_filterbank(sample_rate, n, int(m)).T.copy()), persistent=False)
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def log_mel(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        """Waveform ``[B, 1, T]`` or ``[B, T]`` -> log-mel features ``[B, frames, n_mels]``."""
        spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, n_fft // 4, n_fft,
                          window=getattr(self, f"window_{n_fft}"), center=True, pad_mode="reflect",
                          normalized=False, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)   # [B, frames, bins]
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


class PhaseDerivativeLoss(nn.Module):
    """How far the phase *derivatives* of ``y_hat`` are from those of ``y``, magnitude-weighted.

    Mel losses see magnitudes only; a frame-rate decoder trained on them alone learns no phase
    structure (its frames repeat, and the overlap-add rings at ``sample_rate / hop``: a comb of
    100 Hz lines instead of the speaker's harmonics). A codec cannot transmit absolute phase at a
    few kbit/s, but the time and frequency derivatives of phase (instantaneous frequency and group
    delay, as in APNet's anti-wrapping losses) are local and predictable. For each pair of
    neighbouring STFT bins, along time and along frequency, the loss is
    ``1 - cos(dphase_hat - dphase)``, weighted by the geometric mean of the pair's target magnitudes
    (so silent bins, whose phase is noise, do not count) and averaged; 0 when the derivatives match.

    Args:
        n_fft: STFT size (window = ``n_fft``, Hann, no centring).
        hop: STFT hop in samples.
    """

    def __init__(self, n_fft: int = 480, hop: int = 120) -> None:
        super().__init__()
        self.n_fft, self.hop = int(n_fft), int(hop)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def _spec(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x.reshape(-1, x.shape[-1]), self.n_fft, self.hop, self.n_fft, window=self.window,
                          center=False, return_complex=True)  # [B, bins, frames]

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y_hat``, ``y`` ``[B, 1, T]`` -> scalar in ``[0, 2]``."""
        s_hat = self._spec(y_hat)
        with torch.no_grad():
            s_ref = self._spec(y)
            mag_ref = s_ref.abs()
            # a floor well below speech level keeps unit phasors (and their gradients) bounded
            floor = 1e-4 * mag_ref.amax(dim=(1, 2), keepdim=True).clamp(min=1e-8)
            u_ref = s_ref / (mag_ref + floor)
        u_hat = s_hat / torch.sqrt(s_hat.real.square() + s_hat.imag.square() + floor.square())
        loss = y_hat.new_zeros(())
        for dim in (1, 2):  # along frequency (group delay), along time (instantaneous frequency)
            n = u_hat.shape[dim]
            a, b = u_hat.narrow(dim, 1, n - 1), u_hat.narrow(dim, 0, n - 1)
            ra, rb = u_ref.narrow(dim, 1, n - 1), u_ref.narrow(dim, 0, n - 1)
            weight = torch.sqrt(mag_ref.narrow(dim, 1, n - 1) * mag_ref.narrow(dim, 0, n - 1))
            cos_diff = (a * b.conj() * (ra * rb.conj()).conj()).real
            loss = loss + ((1 - cos_diff) * weight).sum() / weight.sum().clamp(min=1e-8)
        return loss / 2


class FrameHeadLoss(nn.Module):
    """Direct targets for a frame decoder's iSTFT head (``model.frame.phase: integrated`` or ``peak``),
    on the decoder's own frames: ``(magnitude loss, phase-advance loss)``.

    The decoder's frames are the encoder's analysis frames (same ``n_fft``, hop and square-root
    Hann window, a perfect-reconstruction pair), so the target of every head output is exact:

    * magnitude: ``mean(| |S_hat|^0.3 - |S|^0.3 |)``, per bin at full resolution (the mel losses
      pool bins into at most 160 bands and blur harmonics);
    * phase advance: ``wrap(phase_f - phase_{f-1} - centre_k)`` per bin; the loss is
      ``1 - cos(predicted - target)`` weighted by the target magnitude (the phase of silent bins
      is noise) and averaged. The first frame of a chunk, whose previous phase is unknown, is
      left out. A mel loss through the overlap-add teaches this only faintly: a head trained on
      mel losses alone kept every bin at its centre frequency (lines 50 Hz apart, no harmonics).

    Args:
        n_fft, hop: the decoder's framing (``model.frame``).
    """

    def __init__(self, n_fft: int = 480, hop: int = 240) -> None:
        super().__init__()
        from lrac.models.frame import LOG_MAG_MAX, CausalSTFT  # the decoder's exact framing

        self.stft = CausalSTFT(n_fft, hop)
        self.log_mag_max = LOG_MAG_MAX
        bins = n_fft // 2 + 1
        self.register_buffer("centre", torch.arange(bins) * (2 * math.pi * hop / n_fft), persistent=False)

    def forward(self, head: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``head [B, 2 * bins, F]`` (log-magnitudes, advances), target ``y [B, 1, F * hop]``."""
        log_mag, advance = head.chunk(2, dim=1)
        with torch.no_grad():
            spec = self.stft(y)[..., : head.shape[-1]]                  # [B, bins, F]
            mag = spec.abs()
            phase = spec.angle()
            target = phase[..., 1:] - phase[..., :-1] - self.centre[:, None]
            weight = mag[..., 1:]
        magnitude = (torch.exp(0.3 * log_mag.clamp(max=self.log_mag_max)) - mag.pow(0.3)).abs().mean()
        cos_diff = torch.cos(advance[..., 1:] - target)
        return magnitude, ((1 - cos_diff) * weight).sum() / weight.sum().clamp(min=1e-8)


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

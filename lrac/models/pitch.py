"""The pitch path of the frame decoder: a pitch tracker for training targets and a harmonic source.

Why. An iSTFT head trained with mel losses learns the spectral envelope but not the phase that makes
the harmonics of voiced speech line up from frame to frame; its output sounds breathy and scores at
the floor of PESQ (docs/results.md). A source-filter split fixes that by construction: the decoder
predicts the pitch ``f0`` and a voicing flag per frame, a band-limited pulse train with a continuous
phase supplies the harmonics, and the decoder only has to decide, per bin, how much of its envelope
is harmonic (``lrac/models/frame.py``). The pitch head is trained against :func:`estimate_pitch` (YIN) on the
target speech.

Frame convention (as the rest of the frame family): pitch frame ``k`` describes the instant
``(k + 1) * hop``, the end of the hop the frame completes. The source on the hop
``[k * hop, (k + 1) * hop)`` moves linearly from frame ``k - 1``'s pitch to frame ``k``'s, so it needs
nothing later than frame ``k``: no look-ahead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .streaming import State, StreamingModule

F0_MIN_HZ = 50.0
F0_MAX_HZ = 500.0
ABS_SILENCE_DB = -80.0   # frames quieter than this (mean square, dB re full scale) are never voiced


def f0_from_logit(logit: torch.Tensor, f0_min: float = F0_MIN_HZ, f0_max: float = F0_MAX_HZ) -> torch.Tensor:
    """Pitch head output -> Hz, log-uniform in ``[f0_min, f0_max]``."""
    return f0_min * (f0_max / f0_min) ** torch.sigmoid(logit)


def pitch_loss(logits: torch.Tensor, f0_hz: torch.Tensor, voiced: torch.Tensor,
               f0_min: float = F0_MIN_HZ, f0_max: float = F0_MAX_HZ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pitch head ``[B, 2, F]`` (f0 logit, voicing logit) against targets ``[B, F]``.

    Returns ``(f0 error in octaves, mean over voiced frames; voicing binary cross-entropy)``."""
    n = min(logits.shape[-1], f0_hz.shape[-1])
    logits, f0_hz, voiced = logits[..., :n], f0_hz[..., :n], voiced[..., :n].float()
    octaves = torch.log2(f0_from_logit(logits[:, 0], f0_min, f0_max) / f0_hz.clamp(min=1.0)).abs()
    f0_err = (octaves * voiced).sum() / voiced.sum().clamp(min=1.0)
    return f0_err, F.binary_cross_entropy_with_logits(logits[:, 1], voiced)


def yin_lags(sample_rate: int, f0_min: float = F0_MIN_HZ, f0_max: float = F0_MAX_HZ) -> tuple[int, int]:
    """``(lag_min, lag_max)`` in samples; a YIN frame spans ``2 * lag_max`` samples."""
    return int(math.floor(sample_rate / f0_max)), int(math.ceil(sample_rate / f0_min))


def yin(segs: torch.Tensor, sample_rate: int, f0_min: float = F0_MIN_HZ, f0_max: float = F0_MAX_HZ,
        threshold: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """YIN (de Cheveigne & Kawahara 2002) on frames ``[B, F, 2 * lag_max]``.

    Returns per frame ``[B, F]``: ``f0_hz`` (refined by a parabola through the dip), ``dip`` (the
    cumulative-mean-normalised difference there: near 0 periodic, near 1 noise), ``has_dip`` (a
    local minimum below ``threshold`` exists) and ``power_db`` (mean square of the first half).
    """
    lag_min, lag_max = yin_lags(sample_rate, f0_min, f0_max)
    width = lag_max                                   # integration window: one period of f0_min
    n_fft = 1 << (2 * lag_max - 1).bit_length()
    spec = torch.fft.rfft(segs, n_fft)
    head = torch.fft.rfft(segs[..., :width], n_fft)
    r = torch.fft.irfft(spec * head.conj(), n_fft)[..., : lag_max + 1]           # r(tau)
    c = F.pad(segs.square().cumsum(-1), (1, 0))
    energy_0 = c[..., width:width + 1]
    energy_tau = c[..., width:width + lag_max + 1] - c[..., : lag_max + 1]
    d = (energy_0 + energy_tau - 2 * r).clamp(min=0)                             # d(tau), tau=0..lag_max
    taus = torch.arange(lag_max + 1, device=segs.device, dtype=segs.dtype)
    cmnd = d * taus / d.cumsum(-1).clamp(min=1e-12)
    cmnd[..., 0] = 1.0

    inner = cmnd[..., 1:-1]
    is_min = (inner <= cmnd[..., :-2]) & (inner <= cmnd[..., 2:])                # tau = 1..lag_max-1
    is_min[..., : lag_min - 1] = False
    dips = is_min & (inner < threshold)
    has_dip = dips.any(-1)
    first_dip = dips.int().argmax(-1) + 1
    best = inner.masked_fill(~is_min, math.inf).argmin(-1) + 1
    tau = torch.where(has_dip, first_dip, best).clamp(1, lag_max - 1)

    y0, y1, y2 = (cmnd.gather(-1, (tau + o)[..., None])[..., 0] for o in (-1, 0, 1))
    denom = y0 - 2 * y1 + y2
    shift = torch.where(denom.abs() > 1e-12, 0.5 * (y0 - y2) / denom, torch.zeros_like(denom))
    f0 = sample_rate / (tau + shift.clamp(-1, 1))
    power_db = 10 * torch.log10(energy_0[..., 0] / width + 1e-12)
    return f0, y1.clamp(0, 1), has_dip, power_db


@torch.no_grad()
def estimate_pitch(wav: torch.Tensor, sample_rate: int, hop: int, f0_min: float = F0_MIN_HZ,
                   f0_max: float = F0_MAX_HZ, threshold: float = 0.2,
                   silence_db: float = -45.0) -> tuple[torch.Tensor, torch.Tensor]:
    """YIN pitch of ``wav [B, 1, T]`` (or ``[B, T]``) on the frame grid: ``(f0_hz, voiced)``, ``[B, T // hop]``.

    Frame ``k`` is analysed around sample ``(k + 1) * hop`` (it may look ahead: these are training
    targets, not part of the codec). A frame is voiced when it has a YIN dip below ``threshold`` and
    is within ``-silence_db`` of the clip's loudest frame (and above -80 dBFS).
    Unvoiced frames carry the last voiced pitch forward (the first voiced one before it), so a
    teacher-forced source glides instead of jumping.
    """
    x = wav.reshape(wav.shape[0], -1).double()
    n_frames = x.shape[-1] // hop
    if n_frames == 0:
        return wav.new_zeros(x.shape[0], 0), torch.zeros(x.shape[0], 0, dtype=torch.bool, device=x.device)
    span = 2 * yin_lags(sample_rate, f0_min, f0_max)[1]
    centres = (torch.arange(n_frames, device=x.device) + 1) * hop
    starts = centres - span // 2 + span
    segs = F.pad(x, (span, span))[:, starts[:, None] + torch.arange(span, device=x.device)]   # [B, F, span]
    f0, _, has_dip, power_db = yin(segs, sample_rate, f0_min, f0_max, threshold)

    loud_enough = (power_db > power_db.amax(-1, keepdim=True) + silence_db) & (power_db > ABS_SILENCE_DB)
    voiced = has_dip & loud_enough & (f0 >= f0_min) & (f0 <= f0_max)

    # carry the last voiced pitch through unvoiced frames
    idx = torch.where(voiced, torch.arange(n_frames, device=x.device), -1).cummax(-1).values
    first = voiced.int().argmax(-1, keepdim=True)
    idx = torch.where(idx < 0, first.expand_as(idx), idx)
    f0 = f0.gather(-1, idx).clamp(f0_min, f0_max)
    return f0.to(wav.dtype), voiced


class CausalPitchFeatures(StreamingModule):
    """Encoder-side pitch analysis: waveform ``[B, 1, T]`` -> ``[B, 2, T // hop]``.

    Frame ``f`` runs :func:`yin` on the ``2 * lag_max`` samples (40 ms at 50 Hz) that end at
    ``(f + 1) * hop``, so it needs no look-ahead. Features: ``log2(f0 / 100 Hz)`` and the YIN dip
    (periodicity). They give the encoder pitch explicitly; spectra of 20 ms frames barely resolve
    the harmonics of low voices.
    """

    def __init__(self, sample_rate: int, hop: int) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop
        self.span = 2 * yin_lags(sample_rate)[1]

    def init_state(self, batch_size: int) -> State:
        return State(buffer=torch.zeros(batch_size, 1, self.span - self.hop))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        state = self.stream_state
        buf = (F.pad(wav, (self.span - self.hop, 0)) if state is None
               else torch.cat([state.buffer.to(wav), wav], -1))
        n = max((buf.shape[-1] - self.span) // self.hop + 1, 0)
        if state is not None:
            state.buffer = buf[..., n * self.hop:]
        if n == 0:
            return wav.new_zeros(wav.shape[0], 2, 0)
        segs = buf[:, 0, : (n - 1) * self.hop + self.span].unfold(-1, self.span, self.hop)
        f0, dip, _, _ = yin(segs, self.sample_rate)
        return torch.stack([torch.log2(f0 / 100.0), dip], 1)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        n_fft = 1 << (self.span - 1).bit_length()
        bins = n_fft // 2 + 1
        # two forward FFTs and one inverse, the cross-spectrum, and ~8 operations per lag
        per_frame = 3 * math.ceil(2.5 * n_fft * math.log2(n_fft)) + 3 * bins + 8 * self.span // 2
        return output.shape[-1] * per_frame


class HarmonicSource(StreamingModule):
    """Pitch and voicing per frame ``[B, F]`` -> band-limited pulse train ``[B, 1, F * hop]``.

    Level: in the STFT with ``window`` (the decoder's), a voiced frame has a mean power of about 1
    per bin whatever the pitch, like the unit phasors of the aperiodic part, so one envelope serves
    both. (Harmonics are scaled by ``sqrt(bins / (K * e))``: ``K`` harmonics below Nyquist, each
    spreading ``e = N sum(w^2) / sum(w)^2`` times its peak power over the bins.) The phase is
    continuous (a running sum of ``f0 / sample_rate`` cycles, in float64), so the harmonics line up
    across frames. The source carries no gradient: the pitch head learns from :func:`pitch_loss` only.
    """

    def __init__(self, sample_rate: int, hop: int, window: torch.Tensor) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop
        n = window.numel()
        peak_gain = 2.0 / float(window.sum())                            # a harmonic peaks at 1
        spread = n * float(window.pow(2).sum()) / float(window.sum()) ** 2
        self.gain = peak_gain * math.sqrt((n // 2 + 1) / spread)        # times 1 / sqrt(K) per sample
        self.register_buffer("ramp", (torch.arange(hop, dtype=torch.float64) + 1) / hop,
                             persistent=False)

    def init_state(self, batch_size: int) -> State:
        return State(f0=None, voicing=None, phase=None)

    @torch.no_grad()
    def forward(self, f0_hz: torch.Tensor, voicing: torch.Tensor) -> torch.Tensor:
        b, n = f0_hz.shape
        out_dtype = f0_hz.dtype
        if n == 0:
            return f0_hz.new_zeros(b, 1, 0)
        f0, v = f0_hz.double(), voicing.double()
        state = self.stream_state
        prev_f0 = f0[:, :1] if state is None or state.f0 is None else state.f0
        prev_v = torch.zeros_like(v[:, :1]) if state is None or state.voicing is None else state.voicing
        phase0 = torch.zeros_like(f0[:, :1]) if state is None or state.phase is None else state.phase
        # per-sample pitch/voicing: a linear glide from the previous frame to this one over each hop
        f0_s = torch.lerp(torch.cat([prev_f0, f0[:, :-1]], 1)[..., None], f0[..., None], self.ramp)
        v_s = torch.lerp(torch.cat([prev_v, v[:, :-1]], 1)[..., None], v[..., None], self.ramp)
        f0_s, v_s = f0_s.reshape(b, -1), v_s.reshape(b, -1)
        cycles = phase0 + (f0_s / self.sample_rate).cumsum(-1)
        cycles = cycles - cycles.floor()
        if state is not None:
            state.f0, state.voicing, state.phase = f0[:, -1:], v[:, -1:], cycles[:, -1:]
        # sum_{k=1..K} cos(k theta) = sin((K + 1/2) theta) / (2 sin(theta / 2)) - 1/2, K harmonics < Nyquist
        theta = 2 * math.pi * cycles
        n_harm = torch.ceil(0.5 * self.sample_rate / f0_s) - 1      # strictly below Nyquist
        half = torch.sin(0.5 * theta)
        near_zero = half.abs() < 1e-6
        pulses = torch.where(near_zero, n_harm,
                             torch.sin((n_harm + 0.5) * theta) / (2 * torch.where(near_zero, 1.0, half)) - 0.5)
        return (pulses * (v_s * self.gain) * n_harm.rsqrt()).to(out_dtype)[:, None]

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        # per sample: glides (4), phase sum and wrap (3), three sines (charged 8 each), division, gains, rsqrt (6)
        return output.shape[-1] * 37

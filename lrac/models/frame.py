"""The frame-rate family: causal STFT in, ConvNeXt stacks at the frame rate, inverse STFT out.

The waveform exists only at the two ends. All learned layers run at ``sample_rate / hop`` frames per
second (100 Hz at hop 240) as wide matrix products, which is what makes this family cheap to train
and to run (docs/frame_family.md):

    encoder  [B, 1, T] -> CausalSTFT -> spectral features [B, 3 * bins, F] -> Linear -> LayerNorm
             -> ConvNeXt blocks -> LayerNorm -> Linear -> latent [B, latent_dim, F]
    decoder  latent -> Linear -> LayerNorm -> ConvNeXt blocks -> LayerNorm
             -> Linear (log-magnitude, phase) [B, 2 * bins, F] -> CausalISTFT -> [B, 1, F * hop]

Framing. Frame ``f`` covers the ``n_fft`` samples ending at ``(f + 1) * hop`` (the current hop and the
previous ones), so the encoder needs nothing beyond the buffered hop. The decoder's frame ``f`` is
synthesised on the same span; an output sample is final once every frame covering it has been
overlap-added, i.e. ``(n_fft - hop) / hop`` frames later (10 ms at n_fft 480, hop 240), declared as
look-ahead. Further look-ahead comes only from depthwise convs with explicit right padding.

Costs. Linear layers and convs are counted by the complexity hooks; the two FFTs declare their MACs
through ``extra_macs`` (a conservative ``2.5 * N * log2 N`` per frame, the ``5 N log2 N`` flop count
of a complex FFT, plus the window). Normalisation is per frame over channels only (streamable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FrameConfig, ModelConfig
from .conv import Residual, SConv1d
from .lowband import ROW_BITS, LowBandDecoder, LowBandEncoder, code_bits, layouts
from .pitch import HarmonicSource, PitchPacker, PitchTracker, PitchUnpacker
from .streaming import FrameDelay, State, StreamingModule, causal_frames

LOG_MAG_MAX = 7.0   # decoder magnitudes are exp(min(log_mag, 7)) ~ 1100: a guard against overflow
POWER_FLOOR = 1e-8  # floor of |X|^2 in the encoder features


def fft_macs(n: int) -> int:
    """MACs charged for one length-``n`` (inverse) real FFT: ``5 n log2 n`` flops / 2, rounded up
    (the flop count of a complex FFT, so conservative for a real one)."""
    return math.ceil(2.5 * n * math.log2(n))


def sqrt_hann(n: int) -> torch.Tensor:
    """Periodic square-root Hann window: analysis x synthesis = Hann, which sums to 1 at hop n/2."""
    return torch.hann_window(n, periodic=True).sqrt()


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Frames ``[B, F, n_fft]`` (``n_fft`` a multiple of ``hop``) -> ``[B, (F - 1) * hop + n_fft]``."""
    b, n_frames, n_fft = frames.shape
    m = n_fft // hop
    pieces = frames.reshape(b, n_frames, m, hop)
    out = None
    for j in range(m):
        piece = F.pad(pieces[:, :, j].reshape(b, n_frames * hop), (j * hop, (m - 1 - j) * hop))
        out = piece if out is None else out + piece
    return out


class CausalSTFT(StreamingModule):
    """Waveform ``[B, 1, T]`` -> complex spectrum ``[B, n_fft // 2 + 1, T // hop]``.

    Frame ``f`` is the square-root-Hann windowed span ``[(f + 1) * hop - n_fft, (f + 1) * hop)``;
    samples before 0 are zeros. No look-ahead: a frame is complete when its last hop is buffered.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", sqrt_hann(n_fft), persistent=False)

    def init_state(self, batch_size: int) -> State:
        return State(buffer=self.window.new_zeros(batch_size, 1, self.n_fft - self.hop))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        frames = causal_frames(self.stream_state, wav, self.n_fft, self.hop)    # [B, F, n_fft]
        if frames.shape[1] == 0:  # (an FFT of zero frames is an error for some backends)
            # complex zeros made from real ones: the ONNX export keeps their [..., 2] real layout
            return torch.view_as_complex(frames.new_zeros(frames.shape[0], self.n_fft // 2 + 1, 0, 2))
        return torch.fft.rfft(frames * self.window, dim=-1).transpose(1, 2)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        return output.shape[-1] * (self.n_fft + fft_macs(self.n_fft))


class CausalISTFT(StreamingModule):
    """Log-magnitude and phase ``[B, 2 * bins, F]`` -> waveform ``[B, 1, F * hop]`` by inverse FFT,
    square-root-Hann synthesis window and overlap-add.

    Frame ``f`` lands on ``[(f + 1) * hop - n_fft, (f + 1) * hop)`` (the span the encoder analysed);
    the part before 0 is dropped. Streaming emits the samples no later frame can change and keeps
    the rest (``n_fft - hop`` samples) until the next frames or the flush.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        if n_fft % hop:
            raise ValueError(f"n_fft {n_fft} must be a multiple of hop {hop} for the overlap-add")
        self.n_fft, self.hop = n_fft, hop
        self.overlap = n_fft - hop
        self.register_buffer("window", sqrt_hann(n_fft), persistent=False)

    @property
    def lookahead_samples(self) -> float:
        """Overlap-add latency in input frames: ``(n_fft - hop) / hop``."""
        return self.overlap / self.hop

    def init_state(self, batch_size: int) -> State:
        return State(tail=self.window.new_zeros(batch_size, self.overlap), drop=self.overlap)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None,
                extra_frames: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: log-magnitude and phase ``[B, 2 * bins, F]``; ``extra``: an optional complex
        spectrum ``[B, bins, F]`` added before the inverse FFT (the pitch path's harmonics)."""
        log_mag, phase = x.transpose(1, 2).chunk(2, dim=-1)          # [B, F, bins] each
        if x.shape[-1]:
            mag = torch.exp(log_mag.clamp(max=LOG_MAG_MAX))
            spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
            if extra is not None:
                spec = spec + extra.transpose(1, 2)
            frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window
            if extra_frames is not None:   # frames already under the synthesis window (the low band)
                frames = frames + extra_frames
        else:  # (an FFT of zero frames is an error for some backends)
            frames = x.new_zeros(x.shape[0], 0, self.n_fft)
        ola = overlap_add(frames, self.hop)                          # starts at sample -overlap
        state = self.stream_state
        if state is None:
            return ola[:, None, self.overlap:]
        ola = torch.cat([ola[:, : self.overlap] + state.tail, ola[:, self.overlap:]], dim=-1)
        n = x.shape[-1] * self.hop
        out, state.tail = ola[:, :n], ola[:, n:]
        if state.final:
            out, state.tail = ola, ola[:, :0]
        drop = min(state.drop, out.shape[-1])
        state.drop -= drop
        return out[:, None, drop:]

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        bins = self.n_fft // 2 + 1
        # an added spectrum: share (sigmoid, voicing, 1 - m, log: 4), exp and products (4), sum (2) per bin
        added = 10 * bins if len(inputs) > 1 and inputs[1] is not None else 0
        added += self.n_fft if len(inputs) > 2 and inputs[2] is not None else 0   # the low band's frames
        return inputs[0].shape[-1] * (fft_macs(self.n_fft) + self.n_fft + 2 * bins + added)


class PhaseRotation(nn.Module):
    """Complex spectrum ``[B, bins, F]`` times ``exp(i * phase)``, phase ``[B, bins, F]`` in radians."""

    def forward(self, spec: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return spec * torch.polar(torch.ones_like(phase), phase)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        # per bin: cos and sin (charged 8 each) and a complex product (4)
        return output.shape[-1] * output.shape[-2] * 20


def mlp_hidden(dim: int, mlp_ratio: float) -> int:
    """Hidden units of a :class:`ConvNeXtBlock`'s MLP in a backbone of width ``dim``."""
    return int(round(dim * mlp_ratio))


class ConvNeXtBlock(Residual):
    """``x + gamma * W2 gelu(W1 LayerNorm(dwconv(x)))`` on ``[B, C, F]`` (ConvNeXt / Vocos block).

    The depthwise conv is causal with ``lookahead`` frames of right padding; the LayerNorm is over
    channels of each frame. When streaming, the skip path waits for the conv's held-back frames.
    """

    def __init__(self, dim: int, hidden: int, kernel: int, lookahead: int = 0,
                 layer_scale: float = 0.25) -> None:
        super().__init__()
        self.dwconv = SConv1d(dim, dim, kernel, groups=dim, weight_norm=False, pad_right=lookahead)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.pw2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = (self.pw2(self.act(self.pw1(self.norm(y)))) * self.gamma).transpose(1, 2)
        return self.add_skip(x, y)


class Backbone(nn.Module):
    """Linear in -> LayerNorm -> ConvNeXt blocks -> LayerNorm -> Linear out, ``[B, C_in, F] ->
    [B, C_out, F]``; the first ``lookahead_frames`` blocks look one frame ahead each."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, layers: int, mlp_ratio: float,
                 kernel: int, lookahead_frames: int) -> None:
        super().__init__()
        if not 0 <= lookahead_frames <= layers or (lookahead_frames and kernel < 2):
            raise ValueError(f"lookahead_frames={lookahead_frames} needs at least that many blocks "
                             f"(have {layers}) and a kernel >= 2 (have {kernel})")
        self.embed = nn.Linear(in_dim, dim)
        self.norm_in = nn.LayerNorm(dim)
        hidden = mlp_hidden(dim, mlp_ratio)
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(dim, hidden, kernel, int(i < lookahead_frames), 1.0 / max(layers, 1))
            for i in range(layers)])
        self.norm_out = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(self.embed(x.transpose(1, 2))).transpose(1, 2)
        x = self.blocks(x)
        return self.out(self.norm_out(x.transpose(1, 2))).transpose(1, 2)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def spectral_features(spec: torch.Tensor) -> torch.Tensor:
    """Complex ``[B, bins, F]`` -> ``[B, 3 * bins, F]``: log-magnitude and the real and imaginary
    parts compressed to magnitude ``|X|^0.3`` (phase kept)."""
    re, im = spec.real, spec.imag
    power = re.square() + im.square() + POWER_FLOOR
    scale = power.pow(-0.35)
    return torch.cat([0.5 * power.log(), re * scale, im * scale], dim=1)


class FrameEncoder(nn.Module):
    """Waveform ``[B, 1, T]`` -> latent ``[B, latent_dim, T // hop]``.

    With the pitch path (``cfg.pitch``) a causal :class:`~lrac.models.pitch.PitchTracker` runs beside
    the STFT: its pitch and periodicity join the spectral features, and :meth:`analyze` also returns
    the pitch symbols ``{"pitch": [B, S, F]}`` (:class:`~lrac.models.pitch.PitchPacker`)."""

    def __init__(self, cfg: FrameConfig, latent_dim: int, sample_rate: int) -> None:
        super().__init__()
        bins = cfg.n_fft // 2 + 1
        pitch = cfg.pitch
        self.stft = CausalSTFT(cfg.n_fft, cfg.hop)
        self.pitch = PitchTracker(sample_rate, cfg.hop) if pitch else None
        self.pitch_packer = (PitchPacker(pitch.bits, pitch.every_frames, pitch.fine_bits, pitch.fine_levels)
                             if pitch else None)
        # streaming: the symbols wait for the backbone's look-ahead frames, so both stay aligned
        self.pitch_delay = FrameDelay(cfg.encoder_lookahead_frames) if pitch else None
        lowband = cfg.lowband
        if lowband:  # the low band is fitted at the pitch the decoder will use: decoded here too
            self.lowband_pitch = PitchUnpacker(pitch.bits, pitch.every_frames, 1, pitch.fine_bits,
                                              pitch.fine_levels)
            self.lowband = LowBandEncoder(cfg.n_fft, cfg.hop, sample_rate, lowband.harmonics, lowband.layout,
                                          sqrt_hann(cfg.n_fft))
            self.lowband_delay = FrameDelay(cfg.encoder_lookahead_frames)
        else:
            self.lowband = None
        in_dim = 3 * bins + (2 if pitch else 0)
        self.backbone = Backbone(in_dim, cfg.encoder_dim, latent_dim, cfg.encoder_layers,
                                 cfg.encoder_mlp_ratio, cfg.kernel, cfg.encoder_lookahead_frames)
        self.hop_length = cfg.hop

    def analyze(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(latent [B, latent_dim, F], symbols)``: with the pitch path ``{"pitch": [B, S, F]}`` int64,
        with a low-band code ``"lowband"`` ``[B, rows, F]`` too (the token layout drops it at the
        bitrates that do not carry it); without either ``{}``."""
        features = spectral_features(self.stft(wav))
        if self.pitch is None:
            return self.backbone(features), {}
        f0, dip, voiced = self.pitch(wav)
        features = torch.cat([features, torch.log2(f0 / 100.0)[:, None].to(features), dip[:, None].to(features)], 1)
        pitch = self.pitch_packer(f0, voiced)
        symbols = {"pitch": self.pitch_delay(pitch)}
        if self.lowband is not None:
            decoded_f0, voicing = self.lowband_pitch(pitch)
            symbols["lowband"] = self.lowband_delay(self.lowband(wav, decoded_f0.to(wav.dtype), voicing))
        return self.backbone(features), symbols

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.analyze(wav)[0]


class FrameDecoder(nn.Module):
    """Latent ``[B, latent_dim, F]`` -> waveform ``[B, 1, F * hop]`` (Vocos-style iSTFT head).

    With the pitch path (``cfg.pitch``) the head also gives a harmonic share and a harmonic phase per
    bin, and the pitch comes from the pitch symbols of the tokens (:class:`~lrac.models.pitch.PitchUnpacker`).
    One envelope ``|S|`` serves both parts: the spectrum is
    ``|S| * ((1 - m) * exp(i phase) + m * H * exp(i psi))``, with ``m = sigmoid(share) * voicing``
    and ``H`` the STFT of a :class:`~lrac.models.pitch.HarmonicSource` pulse train at the pitch, as a
    vocoder mixes periodic and aperiodic excitation under one spectral envelope. The pulse train's
    harmonics all start in cosine phase, a shape no voice has; trained, ``psi`` is mostly a fixed
    offset per bin, a dispersion filter."""

    def __init__(self, cfg: FrameConfig, latent_dim: int, sample_rate: int) -> None:
        super().__init__()
        bins = cfg.n_fft // 2 + 1
        pitch = cfg.pitch
        self.harmonic = pitch is not None
        # log-magnitude and phase; with the pitch path also the harmonic share and phase
        out_dim = (4 if pitch else 2) * bins
        self.backbone = Backbone(latent_dim, cfg.decoder_dim, out_dim, cfg.decoder_layers,
                                 cfg.decoder_mlp_ratio, cfg.kernel, cfg.decoder_lookahead_frames)
        self.istft = CausalISTFT(cfg.n_fft, cfg.hop)
        self.hop_length = cfg.hop
        # frames of one code per row, for concealment (lrac/conceal.py): the pitch code's group, then
        # its per-frame refinement; the low band's decoder extrapolates its own lost frames (0)
        self.symbol_periods = {"pitch": (pitch.every_frames, 1)} if pitch else {}
        if cfg.lowband:
            self.symbol_periods["lowband"] = (0,)
        if pitch:
            # the unpacker holds back as many frames as the backbone, so their outputs stay aligned
            self.pitch_unpacker = PitchUnpacker(pitch.bits, pitch.every_frames, cfg.decoder_lookahead_frames,
                                                pitch.fine_bits, pitch.fine_levels)
            self.source = HarmonicSource(sample_rate, cfg.hop, sqrt_hann(cfg.n_fft))
            self.source_stft = CausalSTFT(cfg.n_fft, cfg.hop)
            self.harmonic_phase = PhaseRotation()
            with torch.no_grad():  # voiced frames start with a harmonic share of sigmoid(1) = 0.73
                self.backbone.out.bias[2 * bins:3 * bins].fill_(1.0)
                # and the harmonic phase at zero: the pulse train as it is, for training to take on
                self.backbone.out.weight[3 * bins:].zero_()
                self.backbone.out.bias[3 * bins:].zero_()
        self.lowband = (LowBandDecoder(cfg.n_fft, cfg.hop, sample_rate, cfg.lowband.harmonics, cfg.lowband.layout,
                                       sqrt_hann(cfg.n_fft)) if cfg.lowband else None)

    def forward(self, latent: torch.Tensor, pitch: torch.Tensor | None = None,
                lowband: torch.Tensor | None = None) -> torch.Tensor:
        """``latent [B, latent_dim, F]`` and, with the pitch path, the ``pitch`` symbols ``[B, S, F]``;
        ``lowband`` symbols ``[B, rows, F]`` where the bitrate carries them (the harmonics below
        500 Hz then come from them, not from the neural spectrum). The head's spectrum is built in
        float32 (under a bfloat16 autocast only the backbone runs in bfloat16)."""
        out = self.backbone(latent)
        out = out.to(torch.promote_types(out.dtype, torch.float32))
        if not self.harmonic:
            return self.istft(out)
        if pitch is None:
            raise ValueError("this decoder has a pitch path: it needs the pitch symbols of the tokens")
        f0, voicing = self.pitch_unpacker(pitch)
        bins = self.istft.n_fft // 2 + 1
        log_mag, phase, share, psi = out.split(bins, dim=1)
        share = torch.sigmoid(share) * voicing.to(out.dtype)[:, None]      # unvoiced frames stay aperiodic
        harmonics = self.source_stft(self.source(f0.to(out.dtype), voicing.to(out.dtype)))
        harmonics = self.harmonic_phase(harmonics, psi)
        harmonics = harmonics * torch.exp(log_mag.clamp(max=LOG_MAG_MAX)) * share
        aperiodic_log_mag = log_mag + torch.log((1 - share).clamp(min=1e-6))
        coded = None
        if lowband is not None and self.lowband is not None:
            coded, keep = self.lowband(lowband, f0.float())
            harmonics = harmonics * keep
            aperiodic_log_mag = torch.where(keep > 0, aperiodic_log_mag, torch.full_like(aperiodic_log_mag, -30.0))
        return self.istft(torch.cat([aperiodic_log_mag, phase], dim=1), harmonics, coded)


def build_frame(cfg: ModelConfig) -> tuple[FrameEncoder, FrameDecoder]:
    f = cfg.frame
    if f.n_fft < f.hop or f.n_fft % f.hop:
        raise ValueError(f"model.frame.n_fft ({f.n_fft}) must be a multiple of model.frame.hop ({f.hop})")
    p = f.pitch
    if p is not None:
        if p.bits < 2 or p.every_frames < 1 or p.bits % p.every_frames:
            raise ValueError(f"model.frame.pitch.bits ({p.bits}) must be at least 2 (code 0 is unvoiced) and "
                             f"split evenly over model.frame.pitch.every_frames ({p.every_frames})")
        if p.fine_bits and p.fine_bits < 2:
            raise ValueError(f"model.frame.pitch.fine_bits ({p.fine_bits}) must be 0 (off) or at least 2")
        if f.decoder_lookahead_frames < max(p.every_frames - 1, 1):
            raise ValueError(f"the pitch path needs a decoder look-ahead (model.frame.decoder_lookahead_frames) "
                             f"of at least {max(p.every_frames - 1, 1)} frame(s): a pitch code spread over "
                             f"{p.every_frames} frame(s), and the onset of the next frame; have "
                             f"{f.decoder_lookahead_frames}")
    if f.lowband is not None:
        if p is None or not p.fine_bits or f.decoder_lookahead_frames < 1:
            raise ValueError("model.frame.lowband needs the pitch path with its refinement (model.frame.pitch "
                             "with fine_bits) and a decoder look-ahead of at least one frame")
        if f.lowband.harmonics < 1 or code_bits(f.lowband.harmonics) % ROW_BITS:
            raise ValueError(f"model.frame.lowband.harmonics ({f.lowband.harmonics}) must be odd and at least 1: "
                             f"the code ({code_bits(f.lowband.harmonics)} bits) fills whole {ROW_BITS}-bit tokens")
        try:
            layouts(f.lowband.layout, f.lowband.harmonics)
        except ValueError as exc:
            raise ValueError(f"model.frame.lowband.layout: {exc}") from None
    return FrameEncoder(f, cfg.latent_dim, cfg.sample_rate), FrameDecoder(f, cfg.latent_dim, cfg.sample_rate)

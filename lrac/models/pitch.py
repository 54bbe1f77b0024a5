"""The pitch path of the frame family: a causal pitch tracker, the pitch code, a harmonic source.

Why. An iSTFT head trained with mel losses learns the spectral envelope but not the phase that makes
the harmonics of voiced speech line up from frame to frame; its output sounds breathy and scores at
the floor of PESQ (docs/results.md). A source-filter split fixes that by construction: the encoder
measures the pitch ``f0`` and voicing with :class:`PitchTracker` and sends them as a small code
(:class:`PitchPacker`: 64 levels every 20 ms, 300 bit/s, inside the first token of each frame); the
decoder unpacks them (:class:`PitchUnpacker`), runs a band-limited pulse train with a continuous
phase at that pitch (:class:`HarmonicSource`) and only has to decide, per bin, how much of its
envelope is harmonic (``lrac/models/frame.py``). A decoder that had to infer the pitch from the
latent learnt it too slowly on a CPU (docs/frame_family.md, "Pitch path").

Frame convention (as the rest of the frame family): pitch frame ``k`` describes the instant
``(k + 1) * hop``, the end of the hop the frame completes. The source holds frame ``k``'s pitch
and voicing on the hop ``[k * hop, (k + 1) * hop)``.

The rules below are those of the shipped models, each measured on them (docs/frame_family.md,
"Voicing"; docs/results.md): a -70 dB voicing floor and a hold at 0.55, a second, 6.67 ms onset
window, the period within 0.06 of the deepest YIN minimum, late onsets in the refinement bits,
the decoder's backfill of the frame before an onset, and a pitch held over each hop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .streaming import State, StreamingModule, causal_frames, lookup

F0_MIN_HZ = 50.0
F0_MAX_HZ = 500.0
VOICING_FLOOR_DB = -70.0   # frames quieter than this (mean square, dB re full scale) are unvoiced
YIN_THRESHOLD = 0.2        # a YIN dip below this marks a periodic frame
HOLD_THRESHOLD = 0.55      # a voiced run goes on while the dip stays below this (hysteresis)
ONSET_MS = 6.67            # the onset window: the newest 6.67 ms of each frame, a second YIN
ONSET_DIP = 0.4            # a dip below this in the onset window voices a frame
PERIOD_TOLERANCE = 0.06    # the period: the first YIN minimum within this much of the deepest
START_F0_HZ = 100.0        # the decoder's pitch before the first voiced frame (the source is silent then)
FINE_STEP_CENTS = 16.0     # step of the uniform pitch refinement: 4 bits reach -128..+112 cents
# The companded refinement (4 bits; t1 from version 20): errors under 20 cents cost nothing, while a
# quarter of the voiced frames sit further from their group's code, up to octave jumps (docs/results.md)
COMPANDED_CENTS = (-1200, -380, -260, -170, -110, -70, -40, -15, 0, 15, 40, 70, 110, 170, 260, 1200)
FINE_LEVELS = ("uniform", "companded")


def yin_lags(sample_rate: int, f0_min: float = F0_MIN_HZ, f0_max: float = F0_MAX_HZ) -> tuple[int, int]:
    """``(lag_min, lag_max)`` in samples: the periods of ``f0_max`` and ``f0_min``."""
    return int(math.floor(sample_rate / f0_max)), int(math.ceil(sample_rate / f0_min))


def yin_correlation(segs: torch.Tensor, widths: tuple[int, ...], lags: int) -> torch.Tensor:
    """``r(tau)``, ``tau = 0..lags - 1``, of frames ``[B, F, max(widths) + lags - 1]`` for each compared
    span: the first ``w`` samples against the same span ``tau`` samples later. ``[B, F, W, lags]``.

    PyTorch computes it with FFTs (per width, of the ``w + lags - 1`` samples it reads); an ONNX export
    as one convolution of the frame with its own heads (a few graph nodes, where the FFTs, their
    complex product and their crops take some fifty: lrac/export.py). The two agree to float rounding
    (tests/test_pitch.py)."""
    if torch.onnx.is_in_onnx_export():
        return _correlation_as_convolution(segs, widths, lags)
    out = []
    for width in widths:
        span = segs[..., : width + lags - 1]
        n_fft = 1 << (span.shape[-1] - 1).bit_length()
        spec = torch.fft.rfft(span, n_fft)
        head = torch.fft.rfft(span[..., :width], n_fft)
        out.append(torch.fft.irfft(spec * head.conj(), n_fft)[..., :lags])
    return torch.stack(out, -2)


def _correlation_as_convolution(segs: torch.Tensor, widths: tuple[int, ...], lags: int) -> torch.Tensor:
    """:func:`yin_correlation` as a direct sum: one grouped convolution of each frame with its heads."""
    b, f, n = segs.shape
    longest = max(widths)
    # each frame's first ``w`` samples, zero beyond: one kernel per width, one group per frame
    keep = (torch.arange(longest, device=segs.device) < torch.tensor(widths, device=segs.device)[:, None])
    heads = segs[..., None, :longest] * keep.to(segs.dtype)                     # [B, F, W, longest]
    r = F.conv1d(segs.reshape(1, b * f, n), heads.reshape(b * f * len(widths), 1, longest), groups=b * f)
    return r.reshape(b, f, len(widths), -1)[..., :lags]


def yin_cmnd(segs: torch.Tensor, sample_rate: int, widths: tuple[int, ...], f0_min: float = F0_MIN_HZ
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """YIN's cumulative-mean-normalised difference (de Cheveigne & Kawahara 2002) of frames
    ``[B, F, max(widths) + lag_max]``, for each width ``w``: the first ``w`` samples of each frame
    against the same span ``tau`` samples later. Returns ``(cmnd [B, F, W, lag_max + 1],
    power_db [B, F, W])``, the latter the mean square of the compared span."""
    lag_max = yin_lags(sample_rate, f0_min)[1]
    taus = torch.arange(lag_max + 1, device=segs.device)
    width = torch.tensor(widths, device=segs.device)
    r = yin_correlation(segs, widths, lag_max + 1)                               # r(tau)
    c = F.pad(segs.square().cumsum(-1), (1, 0))
    energy_0 = c[..., width][..., None]                                          # [B, F, W, 1]
    energy_tau = c[..., width[:, None] + taus] - c[..., None, : lag_max + 1]     # [B, F, W, lags]
    d = (energy_0 + energy_tau - 2 * r).clamp(min=0)                             # d(tau), tau=0..lag_max
    taus = taus.to(segs.dtype)
    # 1 at tau = 0 (a where, not an in-place write: one node in an exported graph, not a scatter)
    cmnd = torch.where(taus == 0, 1.0, d * taus / d.cumsum(-1).clamp(min=1e-12))
    power_db = 10 * torch.log10(energy_0[..., 0] / width.to(segs.dtype) + 1e-12)
    return cmnd, power_db


class YinCurve:
    """YIN curves (:func:`yin_cmnd`, ``[..., lag_max + 1]``) with their local minima in the pitch
    range found once, for the picks the tracker makes on them (several curves at once: the picks
    of every curve run as one batch, which keeps an exported graph small)."""

    def __init__(self, cmnd: torch.Tensor, sample_rate: int, f0_min: float = F0_MIN_HZ,
                 f0_max: float = F0_MAX_HZ) -> None:
        self.cmnd, self.sample_rate = cmnd, sample_rate
        lag_min, self.lag_max = yin_lags(sample_rate, f0_min, f0_max)
        self.inner = cmnd[..., 1:-1]                                               # tau = 1..lag_max-1
        in_range = torch.arange(1, cmnd.shape[-1] - 1, device=cmnd.device) >= lag_min    # tau >= lag_min
        self.is_min = (self.inner <= cmnd[..., :-2]) & (self.inner <= cmnd[..., 2:]) & in_range
        masked = self.inner.masked_fill(~self.is_min, math.inf)
        self.deepest_lag = masked.argmin(-1) + 1
        self.deepest = masked.gather(-1, self.deepest_lag[..., None] - 1)

    def pick(self, threshold: float | torch.Tensor = YIN_THRESHOLD
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """YIN's period: the first local minimum below ``threshold`` (a number, or one per curve
        ``[...]``; else the deepest minimum), refined by a parabola. Returns per curve ``[...]``:
        ``f0_hz``, ``dip`` (the curve there: near 0 periodic, near 1 noise) and ``has_dip`` (a
        minimum below ``threshold`` exists)."""
        threshold = torch.as_tensor(threshold, dtype=self.inner.dtype, device=self.inner.device)
        return self._first_minimum(self.inner < threshold[..., None])

    def period(self, tolerance: float) -> torch.Tensor:
        """The pitch ``[...]`` in Hz at the first local minimum within ``tolerance`` of the deepest
        one. YIN's first dip below an absolute threshold takes half the period whenever that dip
        clears the threshold, even when the true period's is far deeper; the deepest minimum alone
        takes two periods as often. Measured against Praat on the validation clips, a tolerance of
        0.06 cuts the gross pitch errors of the frames the tracker voices from 8.3 % to 6.0 %
        (docs/frame_family.md, "Voicing")."""
        return self._first_minimum(self.inner <= self.deepest + tolerance)[0]

    def _first_minimum(self, near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f0_hz, dip, found)`` at the first local minimum where ``near [..., lag_max - 1]``, else
        at the deepest one (the first within any tolerance of the deepest is the deepest's or an
        earlier one, so :meth:`period` always finds one where a minimum exists)."""
        dips = self.is_min & near
        found = dips.any(-1)
        tau = torch.where(found, dips.int().argmax(-1) + 1, self.deepest_lag)
        f0, dip = self._parabola(tau)
        return f0, dip.clamp(0, 1), found

    def _parabola(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f0_hz, curve at tau)`` ``[...]``, the lag ``tau`` refined by a parabola through its neighbours."""
        tau = tau.clamp(1, self.lag_max - 1)
        y0, y1, y2 = self.cmnd.gather(-1, tau[..., None] + torch.arange(-1, 2, device=tau.device)).unbind(-1)
        denom = y0 - 2 * y1 + y2
        shift = torch.where(denom.abs() > 1e-12, 0.5 * (y0 - y2) / denom, torch.zeros_like(denom))
        return self.sample_rate / (tau + shift.clamp(-1, 1)), y1


def hold_voicing(strict: torch.Tensor, loose: torch.Tensor, prev_voiced: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Voicing with hysteresis, ``[B, F]`` bool: a frame is voiced when ``strict``, or when
    ``loose`` and the frames since the last ``strict`` one were all ``loose`` (a voiced run
    continues while the evidence stays loose). ``prev_voiced [B]`` is the frame before the first
    (streaming); ``None`` means unvoiced."""
    n = strict.shape[-1]
    if prev_voiced is not None:     # a voiced frame before counts as strict, an unvoiced one as a break
        strict = torch.cat([prev_voiced[:, None], strict], -1)
        loose = torch.cat([prev_voiced[:, None], loose], -1)
    pos = torch.arange(strict.shape[-1], device=strict.device).expand_as(strict)
    last_strict = torch.where(strict, pos, -1).cummax(-1).values
    last_break = torch.where(loose | strict, -1, pos).cummax(-1).values
    voiced = strict | (loose & (last_strict > last_break))
    return voiced[:, -n:] if n else voiced[:, :0]


class PitchTracker(StreamingModule):
    """Causal YIN on the frame grid: waveform ``[B, 1, T]`` -> ``(f0_hz, dip, voiced)``, ``[B, T // hop]``.

    Frame ``f`` compares the newest ``sample_rate // 75`` samples up to ``(f + 1) * hop`` (13.3 ms)
    with the same span ``tau`` samples earlier, so it needs no look-ahead and its estimate is about
    as recent as a centred analysis (on 13 validation clips: a median 4 cents from YIN centred on
    the frame end, voicing agreeing on 95 % of frames; a window of one ``1 / f0_min`` period, as
    classic YIN uses, lags by 36 cents). A frame is voiced when it has a YIN dip below
    ``YIN_THRESHOLD``, a pitch in ``[F0_MIN_HZ, F0_MAX_HZ]`` and a level above ``VOICING_FLOOR_DB``.

    Hysteresis (:func:`hold_voicing`): a voiced run goes on while the frames have a dip below
    ``HOLD_THRESHOLD``, and those frames take the pitch of that dip. On a window this short the dip
    of a voiced frame often lies between 0.2 and 0.5 (docs/frame_family.md, "Voicing").

    Onsets: a second YIN compares only the newest ``ONSET_MS``: a frame whose dip there is below
    ``ONSET_DIP`` is voiced too, with that window's pitch, and starts a run the hold can continue.
    A causal window sees a voice only once one period and the window both lie inside it, so a
    shorter one finds an onset sooner (about a frame; docs/frame_family.md).

    Every voiced frame then takes the period of the first YIN minimum within ``PERIOD_TOLERANCE``
    of the deepest (:meth:`YinCurve.period`). The returned ``dip`` stays the long window's (an
    encoder feature).
    """

    def __init__(self, sample_rate: int, hop: int) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop
        self.width = sample_rate // 75
        self.onset_width = round(ONSET_MS * sample_rate / 1000)
        self.span = self.width + yin_lags(sample_rate)[1]
        self.onset_span = self.onset_width + yin_lags(sample_rate)[1]   # the newest part of each frame

    def init_state(self, batch_size: int) -> State:
        return State(buffer=torch.zeros(batch_size, 1, self.span - self.hop),
                     voiced=torch.zeros(batch_size, dtype=torch.bool))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = self.stream_state
        frames = causal_frames(state, wav, self.span, self.hop)   # [B, F, span]
        if frames.shape[1] == 0:
            empty = wav.new_zeros(wav.shape[0], 0)
            return empty, empty, empty.bool()
        # reversed frames: YIN's compared span is then the newest samples
        newest_first = frames.flip(-1)
        cmnd, power_db = yin_cmnd(newest_first, self.sample_rate, (self.width, self.onset_width))
        loud = power_db[..., 0] > VOICING_FLOOR_DB
        # the picks, one batch: YIN's on the long window and on the onset window, the hold's on the
        # long window ([B, F, 3] each); the period's on the long window
        picks = YinCurve(cmnd[..., (0, 1, 0), :], self.sample_rate)
        f0s, dips, found = picks.pick(torch.tensor((YIN_THRESHOLD, YIN_THRESHOLD, HOLD_THRESHOLD), dtype=cmnd.dtype))
        in_range = loud[..., None] & (f0s >= F0_MIN_HZ) & (f0s <= F0_MAX_HZ)
        (f0, f0_short, f0_hold), (dip, dip_short, dip_hold) = f0s.unbind(-1), dips.unbind(-1)
        voiced, _, loose = (found & in_range).unbind(-1)
        onset = in_range[..., 1] & (dip_short < ONSET_DIP) & ~voiced
        f0 = torch.where(onset, f0_short, f0)
        held = hold_voicing(voiced | onset, loose, None if state is None else state.voiced) & ~voiced
        # the long window's pitch where it has one: more precise than the short window's
        take_hold = held & loose
        f0, dip = torch.where(take_hold, f0_hold, f0), torch.where(take_hold, dip_hold, dip)
        voiced = voiced | held
        if state is not None:
            state.voiced = voiced[:, -1]
        voiced = voiced | onset
        # the voicing stays; every voiced frame takes the long window's period
        f0 = torch.where(voiced, picks.period(PERIOD_TOLERANCE)[..., 0], f0)
        return f0.clamp(F0_MIN_HZ, F0_MAX_HZ), dip, voiced

    def extra_macs(self, inputs: tuple, output: tuple) -> int:
        n_fft = 1 << (self.span - 1).bit_length()
        bins = n_fft // 2 + 1
        # two forward FFTs and one inverse, the cross-spectrum, and ~8 operations per lag: 4 for the
        # difference function, 4 for each of the three dip searches (YIN's, the hold's, the period's)
        per_frame = 3 * math.ceil(2.5 * n_fft * math.log2(n_fft)) + 3 * bins + (4 + 4 * 3) * self.span // 2
        # the onset window's own YIN: three FFTs, cross-spectrum, one pick
        n_short = 1 << (self.onset_span - 1).bit_length()
        per_frame += (3 * math.ceil(2.5 * n_short * math.log2(n_short)) + 3 * (n_short // 2 + 1)
                      + 8 * self.onset_span // 2)
        return output[0].shape[-1] * per_frame


def pitch_to_code(f0_hz: torch.Tensor, voiced: torch.Tensor, levels: int) -> torch.Tensor:
    """Pitch ``[...]`` -> code (int64): 0 when unvoiced, else ``1..levels - 1`` uniform in
    log-frequency over ``[F0_MIN_HZ, F0_MAX_HZ]`` (64 levels: 64-cent steps)."""
    position = torch.log(f0_hz.clamp(F0_MIN_HZ, F0_MAX_HZ) / F0_MIN_HZ) / math.log(F0_MAX_HZ / F0_MIN_HZ)
    code = 1 + torch.round(position * (levels - 2)).long()
    return torch.where(voiced, code, torch.zeros_like(code))


def code_to_f0(code: torch.Tensor, levels: int) -> torch.Tensor:
    """Voiced code ``1..levels - 1`` -> Hz (the inverse of :func:`pitch_to_code`)."""
    position = (code - 1).clamp(min=0).double() / (levels - 2)
    return F0_MIN_HZ * (F0_MAX_HZ / F0_MIN_HZ) ** position


def fine_octaves(levels: str, bits: int) -> torch.Tensor:
    """The pitch offset of each refinement symbol in octaves, float64 ``[2 ** bits]`` (the middle
    symbol ``2 ** (bits - 1)``: none): ``uniform`` steps of :data:`FINE_STEP_CENTS`, ``companded``
    the steps of :data:`COMPANDED_CENTS` (4 bits)."""
    if levels == "uniform":
        return (torch.arange(1 << bits) - (1 << (bits - 1))).double() * (FINE_STEP_CENTS / 1200)
    if levels == "companded" and bits == 4:
        return torch.tensor(COMPANDED_CENTS, dtype=torch.float64) / 1200
    raise ValueError(f"pitch refinement levels (model.frame.pitch.fine_levels) must be one of "
                     f"{FINE_LEVELS}, companded with model.frame.pitch.fine_bits=4; got {levels!r} with "
                     f"{bits} bits")


def pitch_to_fine_code(f0_hz: torch.Tensor, coarse_hz: torch.Tensor, voiced: torch.Tensor,
                       octaves: torch.Tensor) -> torch.Tensor:
    """The refinement of a frame's pitch: ``f0_hz`` against the coded pitch ``coarse_hz`` the decoder
    will use, as the nearest of the offsets ``octaves`` (:func:`fine_octaves`; int64, ``[...]``);
    the middle value (no change) where ``voiced`` is false."""
    offset = torch.log2(f0_hz.double() / coarse_hz.double())
    code = (offset[..., None] - octaves.to(offset.device)).abs().argmin(-1)
    return torch.where(voiced, code, torch.full_like(code, len(octaves) // 2))


def fine_code_to_ratio(code: torch.Tensor, octaves: torch.Tensor) -> torch.Tensor:
    """Frequency ratio (float64) of a refinement code (the inverse of :func:`pitch_to_fine_code`)."""
    return 2.0 ** octaves.to(code.device)[code]


def pitch_to_late_code(f0_hz: torch.Tensor, bits: int) -> torch.Tensor:
    """A late onset's pitch as a refinement symbol (int64, ``[...]``): ``2 ** bits - 1`` classes
    uniform in log-frequency over ``[F0_MIN_HZ, F0_MAX_HZ]``, numbered around the middle value
    (which keeps its meaning, no onset). 15 classes: 266 cents each."""
    classes, mid = (1 << bits) - 1, 1 << (bits - 1)
    position = torch.log(f0_hz.double().clamp(F0_MIN_HZ, F0_MAX_HZ) / F0_MIN_HZ) / math.log(F0_MAX_HZ / F0_MIN_HZ)
    k = torch.floor(position * classes).clamp(0, classes - 1).long()
    return k + (k >= mid).long()


def late_code_to_f0(code: torch.Tensor, bits: int) -> torch.Tensor:
    """Hz (float64) at the middle of a late onset's class (the inverse of :func:`pitch_to_late_code`)."""
    classes, mid = (1 << bits) - 1, 1 << (bits - 1)
    k = code - (code > mid).long()
    return F0_MIN_HZ * (F0_MAX_HZ / F0_MIN_HZ) ** ((k.double() + 0.5) / classes)


class PitchPacker(StreamingModule):
    """Encoder side: pitch per frame ``[B, F]`` -> pitch symbols ``[B, S, F]``, one row per token
    that carries pitch bits (:attr:`symbol_bits` gives their widths; ``lrac/tokens.py`` places them).

    Row 0: every ``every`` frames the pitch of the first frame of the group is coded in ``bits`` bits
    (:func:`pitch_to_code`) and sent most significant part first, ``bits // every`` bits in each
    frame of the group (in the first token of each frame). A code is complete ``every - 1`` frames
    after it was measured, which the decoder's look-ahead covers.
    Row 1, with ``fine_bits``: each frame's own pitch against the group's code
    (:func:`pitch_to_fine_code`), in the second token, so only bitrates of two stages or more carry it.
    Late onsets, there too: a voiced frame in a group whose code says unvoiced (its first frame was)
    sends its pitch class in row 1 instead (:func:`pitch_to_late_code`): the code holds the first
    frame's voicing for the whole group, so an onset on a later frame would wait for the next group.
    Row 1 is otherwise unused there, so the bitrate stays.
    """

    def __init__(self, bits: int, every: int, fine_bits: int = 0, fine_levels: str = "companded") -> None:
        super().__init__()
        self.levels, self.every, self.fine_bits = 1 << bits, every, fine_bits
        self.symbol_bits = (bits // every,) + ((fine_bits,) if fine_bits else ())
        self._fine_octaves = fine_octaves(fine_levels, fine_bits) if fine_bits else None

    def init_state(self, batch_size: int) -> State:
        # position: frames seen modulo ``every`` (bounded, so a stream's state takes few shapes and
        # values: lrac/export.py exports one graph branch per state layout)
        return State(position=0, code=torch.zeros(batch_size, 1, dtype=torch.long))

    def forward(self, f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        code = pitch_to_code(f0_hz, voiced, self.levels)                           # [B, F]
        state = self.stream_state
        start = 0 if state is None else state.position
        position = (start + torch.arange(code.shape[-1], device=code.device)) % self.every
        # each frame takes the code of its group's first frame (from the state if that came earlier)
        held = torch.cat([code.new_zeros(code.shape[0], 1) if state is None else state.code, code], -1)
        group_start = torch.where(position == 0, torch.arange(1, held.shape[-1], device=code.device), 0)
        code = held.gather(-1, group_start.cummax(-1).values.expand_as(code))
        if state is not None:
            state.position = (state.position + code.shape[-1]) % self.every
            if code.shape[-1]:
                state.code = code[:, -1:]
        shift = self.symbol_bits[0] * (self.every - 1 - position)
        coarse = (code >> shift) & ((1 << self.symbol_bits[0]) - 1)
        if not self.fine_bits:
            return coarse[:, None]
        fine = pitch_to_fine_code(f0_hz, code_to_f0(code, self.levels), voiced & (code > 0),
                                  self._fine_octaves)
        fine = torch.where(voiced & (code == 0), pitch_to_late_code(f0_hz, self.fine_bits), fine)
        return torch.stack([coarse, fine], 1)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        # log, scale, round, select, shift and mask per frame; the refinement: exp, log, then a
        # difference, magnitude and comparison per level; a late onset's class: log, scale, floor, select
        levels = 0 if self._fine_octaves is None else len(self._fine_octaves)
        return output.shape[-1] * (8 + bool(self.fine_bits) * (6 + 3 * levels))


class PitchUnpacker(StreamingModule):
    """Decoder side: pitch symbols ``[B, S, F]`` -> ``(f0_hz, voicing)`` ``[B, F]`` (voicing 0. or 1.).

    Row 1 (the refinement, :class:`PitchPacker`) is used when present: a bitrate of one stage has
    only row 0. Unvoiced frames keep the last voiced pitch, so that the source glides out instead
    of jumping. Streaming holds back ``delay`` frames (the decoder backbone's look-ahead, at least
    ``every - 1``) so that every emitted frame's code is complete and the output stays aligned with
    the backbone; the flush completes a last partial group with zero symbols, as one pass does.

    Backfill: an unvoiced frame whose next frame is voiced is voiced too, at that frame's
    pitch: the encoder's causal tracker sees a voice only some 10-15 ms after it starts, so the voice
    had usually begun by the end of the frame before. The decoder holds the next frame back anyway
    (``delay``), but may know only the first symbols of its group: the next frame's pitch is what
    its group's symbols up to it say (:meth:`_known_codes`), the unknown low bits at their middle.
    """

    def __init__(self, bits: int, every: int, delay: int, fine_bits: int = 0,
                 fine_levels: str = "companded") -> None:
        super().__init__()
        if delay < max(every - 1, 1):
            raise ValueError(f"a pitch code spread over {every} frame(s) and the backfill need a decoder "
                             f"look-ahead of at least {max(every - 1, 1)} frame(s), have {delay}")
        self.levels, self.every, self.delay = 1 << bits, every, delay
        self.row_bits, self.fine_bits = bits // every, fine_bits
        # the refinement symbol that changes nothing: what stands in where row 1 is absent or unknown
        self.no_refinement = 1 << max(fine_bits - 1, 0)
        # an ONNX export's lookups (:meth:`_pitch`): every code and half code (a code with unknown low
        # bits at their middle), every refinement; plain attributes, float64, not moved or cast
        self._f0_table = code_to_f0(torch.arange(2 * self.levels, dtype=torch.float64) / 2, self.levels)
        fines = torch.arange(1 << fine_bits)
        self._fine_octaves = fine_octaves(fine_levels, fine_bits) if fine_bits else None
        self._ratio_table = fine_code_to_ratio(fines, self._fine_octaves) if fine_bits else None
        self._late_table = late_code_to_f0(fines, fine_bits) if fine_bits else None

    def init_state(self, batch_size: int) -> State:
        return State(pending=torch.zeros(batch_size, 2, 0, dtype=torch.long), emitted=0,
                     last_f0=torch.full((batch_size, 1), START_F0_HZ, dtype=torch.float64))

    def _known_codes(self, symbols: torch.Tensor) -> torch.Tensor:
        """Symbols ``[B, F]`` starting at a group boundary -> ``[B, G, every]``: for each frame of
        each group, the group's code from its symbols up to that frame (the rest zero; a last
        partial group is completed with zero symbols). The last column is the whole code."""
        b, n = symbols.shape
        groups = F.pad(symbols, (0, (-n) % self.every)).reshape(b, -1, self.every)
        shifts = self.row_bits * torch.arange(self.every - 1, -1, -1, device=symbols.device)
        return (groups << shifts).cumsum(-1)

    def _pitch(self, code: torch.Tensor, fine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (int64 or float) and refinement symbols ``[B, F]`` -> ``(f0_hz float64, voiced)``.

        An ONNX export looks the three functions up in tables of their values (a Gather each:
        :func:`~lrac.models.streaming.lookup`), where their arithmetic took some forty nodes per call. Only there: PyTorch's own ``pow`` differs by
        an ulp between the elements it computes in vector registers and the rest, so a table would not
        reproduce eager PyTorch bit for bit (tests/test_golden.py)."""
        voiced = code > 0
        export = torch.onnx.is_in_onnx_export()
        f0 = lookup(self._f0_table, (code * 2).long()) if export else code_to_f0(code, self.levels)
        if self.fine_bits:
            ratio = lookup(self._ratio_table, fine) if export else fine_code_to_ratio(fine, self._fine_octaves)
            f0 = f0 * ratio
            # late onsets (a bitrate without row 1 has only the middle value there: no onset)
            late = ~voiced & (fine != self.no_refinement)
            late_f0 = lookup(self._late_table, fine) if export else late_code_to_f0(fine, self.fine_bits)
            f0, voiced = torch.where(late, late_f0, f0), voiced | late
        return f0, voiced

    def _next_frames(self, known: torch.Tensor, fine: torch.Tensor, start: int, end: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f0_hz, voiced)`` ``[B, end - start]`` of the frames ``start + 1 .. end`` as known at each,
        from :meth:`_known_codes` and the refinement row ``fine [B, F]`` (unvoiced past ``F``); the
        same whatever the chunking: a frame's pitch from its group's symbols up to it, the unknown
        low bits at their middle, and its refinement only when its group is complete."""
        n = fine.shape[-1]
        frames = torch.arange(start + 1, max(min(end + 1, n), start + 1), device=fine.device)
        code = known.flatten(1)[:, frames]
        unknown = self.row_bits * (self.every - 1 - frames % self.every)
        middle = torch.where(code > 0, ((1 << unknown) - 1) / 2, 0.0)
        complete = unknown == 0
        f0, voiced = self._pitch(code + middle, torch.where(complete, fine[:, frames], self.no_refinement))
        missing = end - start - frames.numel()
        return F.pad(f0, (0, missing), value=START_F0_HZ), F.pad(voiced, (0, missing), value=False)

    def forward(self, symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.stream_state
        symbols = symbols.long()
        if symbols.shape[1] == 1:   # no refinement (model or bitrate): no change, and no late onset
            symbols = torch.cat([symbols, torch.full_like(symbols, self.no_refinement)], 1)
        if state is None:
            buf, start, end, last_f0 = symbols, 0, symbols.shape[-1], None
        else:
            buf = torch.cat([state.pending, symbols], -1)
            start = state.emitted
            end = buf.shape[-1] if state.final else max(buf.shape[-1] - self.delay, start)
            last_f0 = state.last_f0
        known = self._known_codes(buf[:, 0])
        codes = known[..., -1:].expand_as(known).flatten(1)          # each frame's group code
        f0, voiced = self._pitch(codes[:, start:end], buf[:, 1, start:end])
        next_f0, next_voiced = self._next_frames(known, buf[:, 1], start, end)    # the backfill
        onset = ~voiced & next_voiced
        f0, voiced = torch.where(onset, next_f0, f0), voiced | onset
        if state is not None:
            keep = (end // self.every) * self.every          # drop whole groups already emitted
            state.pending, state.emitted = buf[..., keep:], end - keep
        # carry the last voiced pitch through unvoiced frames
        if last_f0 is None:
            last_f0 = torch.full_like(f0[:, :1], START_F0_HZ)
        f0 = torch.cat([last_f0, torch.where(voiced, f0, torch.nan)], -1)
        idx = torch.where(~torch.isnan(f0), torch.arange(f0.shape[-1], device=f0.device), 0).cummax(-1).values
        f0 = f0.gather(-1, idx)
        if state is not None:
            state.last_f0 = f0[:, -1:]
        return f0[:, 1:].float(), voiced.float()

    def extra_macs(self, inputs: tuple, output: tuple) -> int:
        # combine symbols, exp of the level, select per frame; the refinement: offset, exp, product;
        # a late onset: compare, exp, two selects; the backfill decodes the next frame too, and selects
        per_frame = 8 + 8 * bool(self.fine_bits)
        return output[0].shape[-1] * (2 * per_frame + 4)


class HarmonicSource(StreamingModule):
    """Pitch and voicing per frame ``[B, F]`` -> band-limited pulse train ``[B, 1, F * hop]``.

    Level: in the STFT with ``window`` (the decoder's), a voiced frame has a mean power of about 1
    per bin whatever the pitch, like the unit phasors of the aperiodic part, so one envelope serves
    both. (Harmonics are scaled by ``sqrt(bins / (K * e))``: ``K`` harmonics below Nyquist, each
    spreading ``e = N sum(w^2) / sum(w)^2`` times its peak power over the bins.) The phase is
    continuous (a running sum of ``f0 / sample_rate`` cycles, in float64), so the harmonics line up
    across frames. The source carries no gradient (the pitch comes from the code, not from a
    learnt layer).

    Each hop holds its frame's pitch and voicing (a step at each hop; the phase stays continuous):
    the source then has a frame's pitch under the decoder frame whose envelope goes with it (a
    glide from the previous frame's pitch, as the first models had, left it a hop behind).
    """

    def __init__(self, sample_rate: int, hop: int, window: torch.Tensor) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop
        n = window.numel()
        peak_gain = 2.0 / float(window.sum())                            # a harmonic peaks at 1
        spread = n * float(window.pow(2).sum()) / float(window.sum()) ** 2
        self.gain = peak_gain * math.sqrt((n // 2 + 1) / spread)        # times 1 / sqrt(K) per sample

    def init_state(self, batch_size: int) -> State:
        return State(phase=None)

    @torch.no_grad()
    def forward(self, f0_hz: torch.Tensor, voicing: torch.Tensor) -> torch.Tensor:
        b, n = f0_hz.shape
        out_dtype = f0_hz.dtype
        if n == 0:
            return f0_hz.new_zeros(b, 1, 0)
        f0, v = f0_hz.double(), voicing.double()
        state = self.stream_state
        phase0 = torch.zeros_like(f0[:, :1]) if state is None or state.phase is None else state.phase
        # each hop at its own frame's pitch and voicing, per sample
        f0_s = f0[..., None].expand(-1, -1, self.hop).reshape(b, -1)
        v_s = v[..., None].expand(-1, -1, self.hop).reshape(b, -1)
        cycles = phase0 + (f0_s / self.sample_rate).cumsum(-1)
        cycles = cycles - cycles.floor()
        if state is not None:
            state.phase = cycles[:, -1:]
        # sum_{k=1..K} cos(k theta) = sin((K + 1/2) theta) / (2 sin(theta / 2)) - 1/2, K harmonics < Nyquist
        theta = 2 * math.pi * cycles
        n_harm = torch.ceil(0.5 * self.sample_rate / f0_s) - 1      # strictly below Nyquist
        half = torch.sin(0.5 * theta)
        near_zero = half.abs() < 1e-6
        pulses = torch.where(near_zero, n_harm,
                             torch.sin((n_harm + 0.5) * theta) / (2 * torch.where(near_zero, 1.0, half)) - 0.5)
        return (pulses * (v_s * self.gain) * n_harm.rsqrt()).to(out_dtype)[:, None]

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        # per sample: phase sum and wrap (3), three sines (charged 8 each), division, gains, rsqrt (6)
        return output.shape[-1] * 33

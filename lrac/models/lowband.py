"""The low band coded close to the waveform: the lowest harmonics' amplitude and phase, frame by frame.

Why: on decoded 6 kbps speech, the reference's waveform below 500 Hz in place of the codec's raises
PESQ-WB from about 2.0 to 2.6-3.0 (docs/results.md, "Bounds"); a pulse train at the coded pitch
gets the harmonics' frequencies right but neither their levels nor their phases, and phase kept
continuous from the pitch alone drifts within a few frames. So the 6 kbps mode gives two of its six
tokens (20 bits per 10 ms frame) to a small parametric code of the harmonics below ``MAX_HZ``:

* the encoder fits ``harmonics`` sinusoids at multiples of the pitch *the decoder will use* (the
  coded pitch, decoded on the send side too) to each windowed frame by least squares;
* a frame's code is a level (the strongest harmonic, ``LEVEL_STEP_DB`` steps, ``LEVEL_BITS`` bits)
  and per harmonic its amplitude below that level (``AMP_STEP_DB`` steps, ``AMP_BITS`` bits) and its
  phase (``PHASE_BITS`` bits, uniform); level code 0 means "no low-band code in this frame";
* the decoder synthesises those sinusoids on the frame, as the spectrum the iSTFT head overlap-adds,
  and the neural spectrum gives way below ``(H + 1/2) * f0`` in the frames that carry a code.

Timing. The decoder's pitch for frame ``f`` is known only with the pitch symbols of frame ``f + 1``
(a pitch code spans two frames, and an onset is voiced a frame early). So the code of frame ``f``
travels in the tokens of frame ``f + 1``, which the decoder waits for anyway (its one frame of
look-ahead): no added latency. Token position 0 carries no code; the last frame gets none.
"""

from __future__ import annotations

import math

import torch

from .streaming import State, StreamingModule, causal_frames

MAX_HZ = 500.0        # the band coded: harmonics below this
LEVEL_BITS = 5        # level codes 1..31: -90..0 dB in 3 dB steps (amplitude 1 = a full-scale sinusoid)
LEVEL_STEP_DB = 3.0
AMP_BITS = 2          # per harmonic: 0, -6, -12, -18 dB below the level
AMP_STEP_DB = 6.0
PHASE_BITS = 3        # per harmonic: 8 phases, 45 degrees apart
NONE = 0              # the level code of a frame without a low-band code
ROW_BITS = 10         # a token's bits: the code fills whole tokens


def code_bits(harmonics: int) -> int:
    """Bits of one frame's low-band code for ``harmonics`` harmonics."""
    return LEVEL_BITS + harmonics * (AMP_BITS + PHASE_BITS)


def row_bits(harmonics: int) -> tuple[int, ...]:
    """Bits per token row of the code of ``harmonics`` harmonics (whole tokens of ``ROW_BITS``)."""
    return (ROW_BITS,) * (code_bits(harmonics) // ROW_BITS)


def harmonic_frames(f0_hz: torch.Tensor, n_fft: int, sample_rate: int, harmonics: int,
                    window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed cosines and sines of the harmonics ``h = 1..harmonics`` of ``f0_hz [B, F]`` on a frame
    of ``n_fft`` samples whose time origin is just after its last sample (so a frame's phases are
    those at its end): ``(basis [B, F, n_fft, 2 * harmonics], active [B, F, harmonics])``, where
    ``active`` marks the harmonics below ``MAX_HZ`` (the others' columns are zero)."""
    h = torch.arange(1, harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)
    freq = f0_hz[..., None] * h                                               # [B, F, H]
    active = freq < MAX_HZ
    t = torch.arange(-n_fft, 0, device=f0_hz.device, dtype=f0_hz.dtype)
    angle = (2 * math.pi / sample_rate) * freq[..., None, :] * t[:, None]      # [B, F, n_fft, H]
    gate = active[..., None, :].to(f0_hz.dtype) * window.to(f0_hz.dtype)[:, None]
    return torch.cat([torch.cos(angle) * gate, torch.sin(angle) * gate], -1), active


def basis_macs(n_fft: int, harmonics: int) -> int:
    """MACs charged for :func:`harmonic_frames` on one frame: a cosine and a sine per sample and
    harmonic (8 each) and the window."""
    return n_fft * harmonics * 18


class LowBandEncoder(StreamingModule):
    """Waveform ``[B, 1, T]`` and the decoder's pitch and voicing for its frames ``[B, F]`` ->
    low-band symbols ``[B, rows, T // hop]`` at token positions: position ``p`` holds the code of
    frame ``p - 1`` (module docstring). Frames are those of the encoder's STFT (``n_fft`` samples
    ending at ``(f + 1) * hop``, the same window). The caller decodes the pitch with a
    :class:`~lrac.models.pitch.PitchUnpacker` that holds back one frame; streaming, this module then
    holds back the frames until their pitch arrives."""

    def __init__(self, n_fft: int, hop: int, sample_rate: int, harmonics: int, row_bits: tuple[int, ...],
                 window: torch.Tensor) -> None:
        super().__init__()
        if sum(row_bits) != code_bits(harmonics):
            raise ValueError(f"a low-band code of {harmonics} harmonics has {code_bits(harmonics)} bits, "
                             f"the token rows give it {sum(row_bits)}")
        self.n_fft, self.hop, self.sample_rate = n_fft, hop, sample_rate
        self.harmonics, self.row_bits = harmonics, row_bits
        self.register_buffer("window", window, persistent=False)

    def init_state(self, batch_size: int) -> State:
        return State(buffer=self.window.new_zeros(batch_size, 1, self.n_fft - self.hop), frames=None,
                     started=False)

    def codes(self, frames: torch.Tensor, f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """One integer code per frame ``[B, F]`` (int64; ``NONE`` where unvoiced or above ``MAX_HZ``)."""
        x = frames * self.window.to(frames.dtype)                                 # [B, F, n_fft]
        basis, active = harmonic_frames(f0_hz.to(frames.dtype), self.n_fft, self.sample_rate,
                                        self.harmonics, self.window)
        gram = basis.transpose(-1, -2) @ basis                                     # [B, F, 2H, 2H]
        ridge = 1e-6 * gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=1e-6)     # a zero column solves to 0
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        coef = torch.linalg.solve(gram + ridge[..., None, None] * eye, (basis.transpose(-1, -2) @ x[..., None]))[..., 0]
        cos_part, sin_part = coef.chunk(2, -1)                # a cos(wt + phi) = a cos(phi) cos(wt) - a sin(phi) sin(wt)
        amp_db = 10 * torch.log10(cos_part.square() + sin_part.square() + 1e-20)
        phase = torch.atan2(-sin_part, cos_part)
        amp_db = torch.where(active, amp_db, torch.full_like(amp_db, -200.0))
        level = torch.round(amp_db.max(-1).values / LEVEL_STEP_DB).clamp(-(1 << LEVEL_BITS) + 2, 0)
        rel = torch.round((level[..., None] * LEVEL_STEP_DB - amp_db) / AMP_STEP_DB).clamp(0, (1 << AMP_BITS) - 1)
        steps = 1 << PHASE_BITS
        ph = torch.round(phase / (2 * math.pi / steps)).long() % steps
        code = (level.long() + (1 << LEVEL_BITS) - 1)                            # 1..31
        for i in range(self.harmonics):
            code = (code << (AMP_BITS + PHASE_BITS)) | (rel[..., i].long() << PHASE_BITS) | ph[..., i]
        has_code = (voiced > 0) & active[..., 0]
        return torch.where(has_code, code, torch.zeros_like(code))

    def forward(self, wav: torch.Tensor, f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """``wav [B, 1, T]`` (``n`` new frames) and the pitch of the frames the unpacker has decoded
        ``[B, m]`` -> symbols ``[B, rows, n]`` for the ``n`` token positions of this call."""
        state = self.stream_state
        frames = causal_frames(state, wav, self.n_fft, self.hop)                  # [B, n, n_fft]
        n = frames.shape[1]
        if state is not None:   # the frames wait for their pitch (the unpacker holds back a frame)
            if state.frames is not None:
                frames = torch.cat([state.frames.to(frames), frames], 1)
            m = f0_hz.shape[-1]
            frames, state.frames = frames[:, :m], frames[:, m:]
        codes = self.codes(frames, f0_hz, voiced)
        first = state is None or not state.started
        if state is not None:
            state.started = True
        if first:
            codes = torch.cat([torch.zeros_like(codes[:, :1]), codes], -1)
        codes = codes[:, :n]                                         # the last frame's code has no token
        return split_rows(codes, self.row_bits)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        n, h2 = self.n_fft, 2 * self.harmonics
        # basis; Gram matrix (symmetric half) and right side; a solve of that size; window; quantise
        per_frame = basis_macs(n, self.harmonics) + n * h2 * (h2 + 1) // 2 + n * h2 + h2 ** 3 + n + 40 * self.harmonics
        return output.shape[-1] * per_frame


class LowBandDecoder(StreamingModule):
    """Low-band symbols at token positions ``[B, rows, n]`` and the decoder's pitch ``[B, m]`` for the
    frames it emits -> ``(spectrum [B, bins, m], keep [B, bins, m])``: the harmonics' complex spectrum
    (windowed as the iSTFT's frames, so its overlap-add rebuilds them) and the mask that the neural
    spectrum is multiplied by (0 below ``(H + 1/2) f0`` in frames with a code, else 1)."""

    def __init__(self, n_fft: int, sample_rate: int, harmonics: int, row_bits: tuple[int, ...],
                 window: torch.Tensor) -> None:
        super().__init__()
        self.n_fft, self.sample_rate, self.harmonics, self.row_bits = n_fft, sample_rate, harmonics, row_bits
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("bin_hz", torch.arange(n_fft // 2 + 1) * (sample_rate / n_fft), persistent=False)

    def init_state(self, batch_size: int) -> State:
        return State(started=False)

    def forward(self, symbols: torch.Tensor, f0_hz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = join_rows(symbols, self.row_bits)                                 # [B, n]
        state = self.stream_state
        first = state is None or not state.started
        if state is not None:
            state.started = True
        if first:                  # position 0 carries no frame's code
            codes = codes[:, 1:]
        m = f0_hz.shape[-1]        # frames emitted now: the flush adds the last one, which has no code
        codes = torch.cat([codes, torch.zeros_like(codes[:, :1]).expand(-1, max(m - codes.shape[-1], 0))], -1)[:, :m]
        return self.synthesize(codes, f0_hz)

    def synthesize(self, codes: torch.Tensor, f0_hz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame codes ``[B, F]`` at pitch ``f0_hz [B, F]`` -> ``(spectrum, keep)`` ``[B, bins, F]``."""
        dtype = f0_hz.dtype
        steps = 1 << PHASE_BITS
        rel, ph = [], []
        for _ in range(self.harmonics):
            ph.insert(0, codes & (steps - 1))
            rel.insert(0, (codes >> PHASE_BITS) & ((1 << AMP_BITS) - 1))
            codes = codes >> (AMP_BITS + PHASE_BITS)
        level = codes                                                              # 0 (none) or 1..31
        has_code = level > NONE
        amp_db = ((level - (1 << LEVEL_BITS) + 1)[..., None] * LEVEL_STEP_DB
                  - torch.stack(rel, -1) * AMP_STEP_DB).to(dtype)
        amp = torch.pow(10.0, amp_db / 20) * has_code[..., None].to(dtype)
        phase = torch.stack(ph, -1).to(dtype) * (2 * math.pi / steps)
        basis, active = harmonic_frames(f0_hz, self.n_fft, self.sample_rate, self.harmonics, self.window)
        coef = torch.cat([amp * torch.cos(phase), -amp * torch.sin(phase)], -1)   # [B, F, 2H]
        frames = (basis @ coef[..., None])[..., 0]                                 # [B, F, n_fft], windowed
        spectrum = torch.fft.rfft(frames, dim=-1).transpose(1, 2)                  # [B, bins, F]
        cut_hz = (active.sum(-1).to(dtype) + 0.5) * f0_hz * has_code.to(dtype)     # 0: keep everything
        keep = (self.bin_hz.to(dtype)[:, None] >= cut_hz[:, None, :]).to(dtype)
        return spectrum, keep

    def extra_macs(self, inputs: tuple, output: tuple) -> int:
        from .frame import fft_macs   # (frame imports this module)
        n, h = self.n_fft, self.harmonics
        # unpack (4 per harmonic), levels (exp: 8) and phases (cos, sin: 16) per harmonic, the basis,
        # one product per sample and column, the FFT, the mask per bin
        per_frame = 28 * h + basis_macs(n, h) + 2 * h * n + fft_macs(n) + (n // 2 + 1)
        return output[0].shape[-1] * per_frame


def split_rows(codes: torch.Tensor, row_bits: tuple[int, ...]) -> torch.Tensor:
    """Integer codes ``[B, F]`` -> symbols ``[B, rows, F]``, row 0 the most significant bits."""
    rows = []
    for bits in reversed(row_bits):
        rows.insert(0, codes & ((1 << bits) - 1))
        codes = codes >> bits
    return torch.stack(rows, 1)


def join_rows(symbols: torch.Tensor, row_bits: tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`split_rows`: ``[B, rows, F]`` -> ``[B, F]``."""
    codes = torch.zeros_like(symbols[:, 0])
    for i, bits in enumerate(row_bits):
        codes = (codes << bits) | symbols[:, i]
    return codes

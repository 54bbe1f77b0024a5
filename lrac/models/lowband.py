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


def harmonic_basis(f0_hz: torch.Tensor, n_fft: int, sample_rate: int, harmonics: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the harmonics ``h = 1..harmonics`` of ``f0_hz [B, F]`` on a frame of
    ``n_fft`` samples whose time origin is just after its last sample (so a frame's phases are those
    at its end): ``(basis [B, F, n_fft, 2 * harmonics], active [B, F, harmonics])``, ``active``
    marking the harmonics below ``MAX_HZ`` (the others' columns are zero)."""
    h = torch.arange(1, harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)
    freq = f0_hz[..., None] * h                                               # [B, F, H]
    active = freq < MAX_HZ
    t = torch.arange(-n_fft, 0, device=f0_hz.device, dtype=f0_hz.dtype)
    angle = (2 * math.pi / sample_rate) * freq[..., None, :] * t[:, None]      # [B, F, n_fft, H]
    gate = active[..., None, :].to(f0_hz.dtype)
    return torch.cat([torch.cos(angle) * gate, torch.sin(angle) * gate], -1), active


def basis_macs(n_fft: int, harmonics: int) -> int:
    """MACs charged for :func:`harmonic_basis` on one frame, as a device computes it: the
    fundamental's ``exp(i w t)`` by one complex rotation per sample (4), each further harmonic by one
    complex product per sample (4), plus the fundamental's cosine and sine once (16)."""
    return 4 * n_fft * harmonics + 16


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
        weight = self.window.to(frames.dtype).square()                           # Hann: the window squared
        basis, active = harmonic_basis(f0_hz.to(frames.dtype), self.n_fft, self.sample_rate, self.harmonics)
        weighted = basis * weight[:, None]                                        # [B, F, n_fft, 2H]
        gram = weighted.transpose(-1, -2) @ basis                                  # [B, F, 2H, 2H]
        ridge = 1e-6 * gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=1e-6)     # a zero column solves to 0
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        rhs = weighted.transpose(-1, -2) @ frames[..., None]
        # least squares under the window (solve_ex: solve without its error check, which the ONNX
        # export cannot trace; the ridge keeps the system regular)
        coef = torch.linalg.solve_ex(gram + ridge[..., None, None] * eye, rhs)[0][..., 0]
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
        if n and (state is None or not state.started):   # the first token position carries no code
            codes = torch.cat([codes.new_zeros(codes.shape[0], 1), codes], -1)
            if state is not None:
                state.started = True
        codes = codes[:, :n]                                         # the last frame's code has no token
        return split_rows(codes, self.row_bits)

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        n, h2 = self.n_fft, 2 * self.harmonics
        # basis; its weighting; Gram matrix (symmetric half) and right side; a solve of that size;
        # levels, phases (atan2: 8) and their quantisation
        per_frame = (basis_macs(n, self.harmonics) + n * h2 + n * h2 * (h2 + 1) // 2 + n * h2 + h2 ** 3
                     + 40 * self.harmonics)
        return output.shape[-1] * per_frame


class LowBandDecoder(StreamingModule):
    """Low-band symbols at token positions ``[B, rows, n]`` and the decoder's pitch ``[B, m]`` for the
    frames it emits -> ``(frames [B, m, n_fft], keep [B, bins, m])``: the harmonics on each frame
    under the Hann window (the analysis and synthesis windows' product, so that the iSTFT's
    overlap-add of them rebuilds the sinusoids), and the mask that the neural spectrum is multiplied
    by (0 below ``(H + 1/2) f0`` in frames with a code, else 1)."""

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
        if codes.shape[-1] and (state is None or not state.started):   # position 0 carries no frame's code
            codes = codes[:, 1:]
            if state is not None:
                state.started = True
        m = f0_hz.shape[-1]        # frames emitted now: the flush adds the last one, which has no code
        codes = torch.cat([codes, codes.new_zeros(codes.shape[0], max(m - codes.shape[-1], 0))], -1)[:, :m]
        return self.synthesize(codes, f0_hz)

    def synthesize(self, codes: torch.Tensor, f0_hz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame codes ``[B, F]`` at pitch ``f0_hz [B, F]`` -> ``(frames [B, F, n_fft], keep [B, bins, F])``."""
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
        basis, active = harmonic_basis(f0_hz, self.n_fft, self.sample_rate, self.harmonics)
        coef = torch.cat([amp * torch.cos(phase), -amp * torch.sin(phase)], -1)   # [B, F, 2H]
        frames = (basis @ coef[..., None])[..., 0] * self.window.to(dtype).square()  # [B, F, n_fft]
        cut_hz = (active.sum(-1).to(dtype) + 0.5) * f0_hz * has_code.to(dtype)     # 0: keep everything
        keep = (self.bin_hz.to(dtype)[:, None] >= cut_hz[:, None, :]).to(dtype)
        return frames, keep

    def extra_macs(self, inputs: tuple, output: tuple) -> int:
        n, h = self.n_fft, self.harmonics
        # unpack (4 per harmonic), levels (exp: 8) and phases (cos, sin: 16) per harmonic, the basis,
        # one product per sample and column, the window, the mask per bin and its use on the two
        # neural spectra (periodic and aperiodic)
        per_frame = 28 * h + basis_macs(n, h) + 2 * h * n + n + 3 * (n // 2 + 1)
        return output[1].shape[-1] * per_frame   # keep: [B, bins, F]


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

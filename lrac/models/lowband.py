"""The low band coded close to the waveform: the lowest harmonics' amplitude and phase, frame by frame.

Why: on decoded 6 kbps speech, the reference's waveform below 500 Hz in place of the codec's raises
PESQ-WB from about 2.0 to 2.6-3.0 (docs/results.md, "Bounds"); a pulse train at the coded pitch
gets the harmonics' frequencies right but neither their levels nor their phases, and phase kept
continuous from the pitch alone drifts within a few frames. So the 6 kbps mode gives two of its six
tokens (20 bits per 10 ms frame) to a small parametric code of the harmonics below ``MAX_HZ``:

* the encoder fits ``harmonics`` sinusoids at multiples of the pitch *the decoder will use* (the
  coded pitch, decoded on the send side too) to each windowed frame by least squares;
* a frame's code is a level (the strongest harmonic's amplitude in dB steps) and per harmonic its
  amplitude below that level and its phase, each on a uniform grid; level code 0 means "no low-band
  code in this frame";
* how the 20 bits split (the *layout*, :data:`LAYOUTS`) follows the number of harmonics below
  ``MAX_HZ`` at the frame's pitch, which the decoder knows too: a high voice's one or two harmonics
  get the bits a low voice spreads over three, the first harmonic's phase the finest steps (on
  validation clips the phases' and the strongest harmonic's steps cost the most, docs/results.md);
* the decoder synthesises those sinusoids on the frame, as the spectrum the iSTFT head overlap-adds,
  and the neural spectrum gives way below ``(H + 1/2) * f0`` in the frames that carry a code.

Timing. The decoder's pitch for frame ``f`` is known only with the pitch symbols of frame ``f + 1``
(a pitch code spans two frames, and an onset is voiced a frame early). So the code of frame ``f``
travels in the tokens of frame ``f + 1``, which the decoder waits for anyway (its one frame of
look-ahead): no added latency. Token position 0 carries no code; the last frame gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..conceal import fade_weight
from .streaming import State, StreamingModule, causal_frames, lookup

MAX_HZ = 500.0        # the band coded: harmonics below this
NONE = 0              # the code of a frame without a low-band code (its level code is 0)
ROW_BITS = 10         # a token's bits: the code fills whole tokens
LEVEL_BITS, AMP_BITS, PHASE_BITS = 5, 2, 3   # a code's size: LEVEL_BITS + harmonics * (AMP_BITS + PHASE_BITS)


@dataclass(frozen=True)
class Layout:
    """How one frame's code spends its bits: the level (``level_bits``: codes 1 .. 2^bits - 1 for
    ``-(2^bits - 2) * level_step_db .. 0`` dB, amplitude 1 being a full-scale sinusoid), then per
    harmonic ``(amplitude bits, amplitude step dB, phase bits)``: its amplitude below the level in
    steps, and its phase on a uniform grid. Most significant first: level, then harmonic 1, 2, ..."""

    level_bits: int
    level_step_db: float
    harmonics: tuple[tuple[int, float, int], ...]

    @property
    def bits(self) -> int:
        return self.level_bits + sum(a + p for a, _, p in self.harmonics)


# layout name -> harmonics below MAX_HZ -> Layout. "adaptive" (t1 from version 17) spends the 20 bits
# of three harmonics on the ones the pitch leaves below 500 Hz; "uniform" (t1 version 16) gives every
# harmonic 2 amplitude and 3 phase bits, whether it is below 500 Hz or not.
LAYOUTS: dict[str, dict[int, Layout]] = {
    "adaptive": {3: Layout(5, 3.0, ((2, 6.0, 4), (2, 6.0, 3), (2, 6.0, 2))),
                 2: Layout(5, 3.0, ((3, 3.0, 5), (3, 3.0, 4))),
                 1: Layout(7, 0.75, ((0, 0.0, 6),))},
}


def layouts(name: str, harmonics: int) -> dict[int, Layout]:
    """The layout of each count of active harmonics ``1..harmonics`` for the layout ``name``."""
    if name == "uniform":
        every = Layout(LEVEL_BITS, 3.0, ((AMP_BITS, 6.0, PHASE_BITS),) * harmonics)
        return {k: every for k in range(1, harmonics + 1)}
    if name not in LAYOUTS:
        raise ValueError(f"unknown low-band layout {name!r}; layouts: uniform, {', '.join(LAYOUTS)}")
    table = LAYOUTS[name]
    if sorted(table) != list(range(1, harmonics + 1)) or max(t.bits for t in table.values()) > code_bits(harmonics):
        raise ValueError(f"the {name!r} low-band layout codes {max(table)} harmonics, not {harmonics}")
    return table


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

    def __init__(self, n_fft: int, hop: int, sample_rate: int, harmonics: int, layout: str,
                 window: torch.Tensor) -> None:
        super().__init__()
        self.n_fft, self.hop, self.sample_rate = n_fft, hop, sample_rate
        self.harmonics, self.row_bits, self.layouts = harmonics, row_bits(harmonics), layouts(layout, harmonics)
        self._tables: dict = {}       # (dtype, device) -> PackTables (:func:`cached_tables`)
        self.register_buffer("window", window, persistent=False)

    def init_state(self, batch_size: int) -> State:
        return State(buffer=self.window.new_zeros(batch_size, 1, self.n_fft - self.hop), frames=None,
                     started=False)

    def codes(self, frames: torch.Tensor, f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """One integer code per frame ``[B, F]`` (int64; ``NONE`` where unvoiced or above ``MAX_HZ``).
        The fit runs in the input's precision, float32 at least, outside any autocast: bfloat16
        training would otherwise code other harmonics than inference does."""
        if frames.dtype in (torch.bfloat16, torch.float16):
            frames = frames.float()
        with torch.autocast(frames.device.type, enabled=False):
            return self._codes(frames, f0_hz, voiced)

    def _codes(self, frames: torch.Tensor, f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
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
        tables = cached_tables(self._tables, PackTables, self.layouts, self.harmonics, amp_db.dtype, amp_db.device)
        code = tables.pack(amp_db, phase, active.sum(-1))
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
        # levels, phases (atan2: 8) and their quantisation, charged once per distinct layout with a
        # select each, as a device without the lookup tables (PackTables) would compute them
        per_frame = (basis_macs(n, self.harmonics) + n * h2 + n * h2 * (h2 + 1) // 2 + n * h2 + h2 ** 3
                     + (40 * self.harmonics + 1) * len(set(self.layouts.values())) - 1)
        return output.shape[-1] * per_frame


class LowBandDecoder(StreamingModule):
    """Low-band symbols at token positions ``[B, rows, n]`` and the decoder's pitch ``[B, m]`` for the
    frames it emits -> ``(frames [B, m, n_fft], keep [B, bins, m])``: the harmonics on each frame
    under the Hann window (the analysis and synthesis windows' product, so that the iSTFT's
    overlap-add of them rebuilds the sinusoids), and the mask that the neural spectrum is multiplied
    by (0 below ``(H + 1/2) f0`` in frames with a code, else 1).

    A lost frame (negative symbols, ``-r`` in the ``r``-th lost frame of a burst: lrac/conceal.py)
    continues the last received frame's harmonics: each phase advanced by its harmonic's turn at the
    decoded pitch over the frames since, the level held and faded as the concealed latent is
    (:func:`lrac.conceal.fade_weight`). On 40 test clips at 10 % random loss this gains +0.076
    PESQ-WB over giving the frame no code (docs/packet_loss.md). ``extrapolates`` False (the ONNX export,
    whose engine decodes whole streams) keeps no memory of the last frame."""

    def __init__(self, n_fft: int, hop: int, sample_rate: int, harmonics: int, layout: str,
                 window: torch.Tensor) -> None:
        super().__init__()
        self.n_fft, self.hop, self.sample_rate, self.harmonics = n_fft, hop, sample_rate, harmonics
        self.row_bits, self.layouts = row_bits(harmonics), layouts(layout, harmonics)
        self.extrapolates = True
        self._tables: dict = {}       # (dtype, device) -> UnpackTables (:func:`cached_tables`)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("bin_hz", torch.arange(n_fft // 2 + 1) * (sample_rate / n_fft), persistent=False)

    def init_state(self, batch_size: int) -> State:
        if not self.extrapolates:
            return State(started=False)
        zeros = self.window.new_zeros(batch_size, self.harmonics, dtype=torch.float64)
        return State(started=False, last_amp_db=zeros, last_phase=zeros.clone(),
                     last_f0_hz=zeros[:, 0].clone(), last_has_code=zeros[:, 0].bool())

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
        """Frame codes ``[B, F]`` (negative: lost) at pitch ``f0_hz [B, F]`` -> ``(frames [B, F, n_fft],
        keep [B, bins, F])``."""
        dtype = f0_hz.dtype
        basis, active = harmonic_basis(f0_hz, self.n_fft, self.sample_rate, self.harmonics)
        tables = cached_tables(self._tables, UnpackTables, self.layouts, self.harmonics, dtype, codes.device)
        has_code, amp_db, phase = tables.unpack(codes, active.sum(-1))
        if self.extrapolates:
            amp_db, phase, has_code = self._extrapolate(codes, f0_hz, amp_db, phase, has_code)
        amp = torch.pow(10.0, amp_db / 20) * has_code[..., None].to(dtype)
        coef = torch.cat([amp * torch.cos(phase), -amp * torch.sin(phase)], -1)   # [B, F, 2H]
        frames = (basis @ coef[..., None])[..., 0] * self.window.to(dtype).square()  # [B, F, n_fft]
        cut_hz = (active.sum(-1).to(dtype) + 0.5) * f0_hz * has_code.to(dtype)     # 0: keep everything
        keep = (self.bin_hz.to(dtype)[:, None] >= cut_hz[:, None, :]).to(dtype)
        return frames, keep

    def _extrapolate(self, codes: torch.Tensor, f0_hz: torch.Tensor, amp_db: torch.Tensor, phase: torch.Tensor,
                     has_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The lost frames (``codes < 0``) of ``amp_db``, ``phase`` ``[B, F, H]`` and ``has_code [B, F]``
        continued from the last received frame (of this call, else the stream's memory)."""
        state = self.stream_state
        lost = codes < 0
        any_lost = bool(lost.any())
        b, n = codes.shape
        if state is None:           # one pass: nothing to remember, and nothing to do without a loss
            if not any_lost:
                return amp_db, phase, has_code
            state = self.init_state(b)
        if n == 0:
            return amp_db, phase, has_code
        if any_lost:
            f0 = f0_hz.double()
            # the fundamental's turn from the end of one frame to the end of the next, at the mean
            # pitch of the two; accumulated in float64 and wrapped (harmonics turn whole multiples)
            before = torch.cat([state.last_f0_hz.to(f0)[:, None], f0[:, :-1]], -1)
            turn = torch.remainder(((math.pi * self.hop / self.sample_rate) * (before + f0)).cumsum(-1), 2 * math.pi)
            frames = torch.arange(n, device=codes.device)
            src = torch.where(lost, -1, frames).cummax(-1).values                 # last received, -1: before
            at = src.clamp(min=0)
            earlier = src < 0
            base_amp = torch.where(earlier[..., None], state.last_amp_db.to(dtype=amp_db.dtype)[:, None],
                                   amp_db.gather(1, at[..., None].expand_as(amp_db)))
            base_phase = torch.where(earlier[..., None], state.last_phase[:, None],
                                     phase.double().gather(1, at[..., None].expand_as(phase)))
            base_has = torch.where(earlier, state.last_has_code[:, None], has_code.gather(1, at))
            base_turn = torch.where(earlier, 0.0, turn.gather(1, at))
            h = torch.arange(1, self.harmonics + 1, device=codes.device, dtype=torch.float64)
            weight = fade_weight(-codes)
            amp_db = torch.where(lost[..., None], base_amp + 20 * torch.log10(weight.clamp(min=1e-10)).to(amp_db.dtype)[..., None],
                                 amp_db)
            phase = torch.where(lost[..., None], (base_phase + h * (turn - base_turn)[..., None]).to(phase.dtype), phase)
            has_code = torch.where(lost, base_has & (weight > 0), has_code)
        state.last_amp_db = amp_db[:, -1].double()
        state.last_phase = phase[:, -1].double()
        state.last_f0_hz = f0_hz[:, -1].double()
        state.last_has_code = has_code[:, -1]
        return amp_db, phase, has_code

    def extra_macs(self, inputs: tuple, output: tuple) -> int:
        n, h = self.n_fft, self.harmonics
        # unpack (4 per harmonic) in each distinct layout and select (3 per harmonic and layout after
        # the first: what a device without UnpackTables' lookups computes, an upper bound of them),
        # levels (exp: 8) and phases (cos, sin: 16) per harmonic, the basis, one product
        # per sample and column, the window, the mask per bin and its use on the two neural spectra
        # (periodic and aperiodic)
        per_layout = len(set(self.layouts.values()))
        per_frame = (4 * per_layout + 3 * (per_layout - 1) + 24) * h + basis_macs(n, h) + 2 * h * n + n + 3 * (n // 2 + 1)
        # a lost frame's extrapolation: the turn (3), the fade's level (log: 8), per harmonic the
        # last frame's values selected (3), the phase advanced (2) and the level faded (1)
        per_frame += 11 + 6 * h
        return output[1].shape[-1] * per_frame   # keep: [B, bins, F]


def pack(layout: Layout, amp_db: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Amplitudes in dB and phases ``[B, F, H]`` (harmonics beyond the layout's ignored; inactive
    ones at -200 dB) -> one code per frame ``[B, F]`` (int64), level first."""
    level = torch.round(amp_db.max(-1).values / layout.level_step_db).clamp(-(1 << layout.level_bits) + 2, 0)
    code = level.long() + (1 << layout.level_bits) - 1                          # 1 .. 2^bits - 1
    for i, (amp_bits, amp_step_db, phase_bits) in enumerate(layout.harmonics):
        rel = torch.round((level * layout.level_step_db - amp_db[..., i]) / amp_step_db).clamp(0, (1 << amp_bits) - 1) \
            if amp_bits else torch.zeros_like(level)
        steps = 1 << phase_bits
        ph = torch.round(phase[..., i] / (2 * math.pi / steps)).long() % steps
        code = (code << (amp_bits + phase_bits)) | (rel.long() << phase_bits) | ph
    return code


def unpack(layout: Layout, codes: torch.Tensor, harmonics: int, dtype: torch.dtype
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack`: codes ``[B, F]`` -> ``(has_code [B, F], amp_db [B, F, harmonics],
    phase [B, F, harmonics])``; harmonics beyond the layout's get no amplitude (-200 dB)."""
    rel_db, phases = [], []
    for amp_bits, amp_step_db, phase_bits in reversed(layout.harmonics):
        steps = 1 << phase_bits
        phases.insert(0, (codes & (steps - 1)).to(dtype) * (2 * math.pi / steps))
        codes = codes >> phase_bits
        rel_db.insert(0, (codes & ((1 << amp_bits) - 1)) * amp_step_db)
        codes = codes >> amp_bits
    level = codes & ((1 << layout.level_bits) - 1)                            # 0 (none) or 1 .. 2^bits - 1
    amp_db = ((level - (1 << layout.level_bits) + 1)[..., None] * layout.level_step_db - torch.stack(rel_db, -1)).to(dtype)
    phase = torch.stack(phases, -1)
    missing = harmonics - len(layout.harmonics)
    if missing:
        amp_db = torch.cat([amp_db, amp_db.new_full((*codes.shape, missing), -200.0)], -1)
        phase = torch.cat([phase, phase.new_zeros(*codes.shape, missing)], -1)
    return level > NONE, amp_db, phase


def field_multipliers(layout: Layout, harmonics: int) -> list[int]:
    """Each field's weight in a code of ``layout``, as :func:`pack` orders them (level first, then per
    harmonic its amplitude and phase): ``[level, amplitudes 1..harmonics, phases 1..harmonics]``; 1
    for the fields of harmonics the layout does not code (they read and write 0)."""
    out = [1] * (1 + 2 * harmonics)
    shift = 0
    for i in reversed(range(len(layout.harmonics))):
        amp_bits, _, phase_bits = layout.harmonics[i]
        out[1 + harmonics + i], out[1 + i] = 1 << shift, 1 << (shift + phase_bits)
        shift += phase_bits + amp_bits
    out[0] = 1 << shift
    return out


def cached_tables(cache: dict, kind: type, table: dict[int, Layout], harmonics: int, dtype: torch.dtype,
                  device: torch.device):
    """``kind(table, harmonics, dtype, device)`` (:class:`PackTables` or :class:`UnpackTables`), made
    once per dtype and device and kept in ``cache``: plain tensors, not buffers, so that
    ``.to(dtype)`` of the module cannot round them."""
    key = (dtype, device)
    if key not in cache:
        cache[key] = kind(table, harmonics, dtype, device)
    return cache[key]


class PackTables:
    """:func:`pack` in every layout of ``table`` at once (the encoder's, in PyTorch and in an ONNX
    export alike): each frame's layout is picked by its count of active harmonics, and its steps,
    bounds and field multipliers are looked up in small tables, so one pass of the same operations
    as :func:`pack` (a division by the step, a rounding, a clamp per field) serves every layout, where
    an exported graph had a chain per layout and harmonic (some hundred nodes). Same results bit for
    bit (tests/test_lowband.py)."""

    def __init__(self, table: dict[int, Layout], harmonics: int, dtype: torch.dtype, device: torch.device) -> None:
        h = harmonics
        rows = [table.get(n, table[min(table)]) for n in range(h + 1)]   # row 0: no code (zeroed later)
        level_step = torch.ones(h + 1, dtype=dtype)
        level_min = torch.zeros(h + 1, dtype=dtype)
        level_offset = torch.zeros(h + 1, dtype=torch.long)
        amp_step = torch.ones(h + 1, h, dtype=dtype)          # 1, bound 0: an absent amplitude codes 0
        amp_max = torch.zeros(h + 1, h, dtype=dtype)
        phase_step = torch.ones(h + 1, h, dtype=dtype)
        phase_steps = torch.ones(h + 1, h, dtype=torch.long)
        scale = torch.tensor([field_multipliers(layout, h) for layout in rows])   # [h + 1, 1 + 2h]
        for n, layout in enumerate(rows):
            level_step[n], level_min[n] = layout.level_step_db, -(1 << layout.level_bits) + 2
            level_offset[n] = (1 << layout.level_bits) - 1
            for i, (amp_bits, amp_step_db, phase_bits) in enumerate(layout.harmonics):
                if amp_bits:
                    amp_step[n, i], amp_max[n, i] = amp_step_db, (1 << amp_bits) - 1
                phase_step[n, i], phase_steps[n, i] = 2 * math.pi / (1 << phase_bits), 1 << phase_bits
        self.level_step, self.level_min, self.level_offset = level_step.to(device), level_min.to(device), level_offset.to(device)
        self.amp_step, self.amp_max = amp_step.to(device), amp_max.to(device)
        self.phase_step, self.phase_steps, self.scale = phase_step.to(device), phase_steps.to(device), scale.to(device)
        self.zero = torch.zeros((), dtype=dtype, device=device)

    def pack(self, amp_db: torch.Tensor, phase: torch.Tensor, n_active: torch.Tensor) -> torch.Tensor:
        """Amplitudes in dB and phases ``[B, F, H]`` and active harmonics ``[B, F]`` -> codes ``[B, F]``
        (int64; meaningless where no harmonic is active)."""
        step = lookup(self.level_step, n_active)
        level = torch.round(amp_db.max(-1).values / step)
        level = torch.minimum(torch.maximum(level, lookup(self.level_min, n_active)), self.zero)
        rel = torch.round((level[..., None] * step[..., None] - amp_db) / lookup(self.amp_step, n_active))
        rel = torch.minimum(torch.maximum(rel, self.zero), lookup(self.amp_max, n_active))
        ph = torch.round(phase / lookup(self.phase_step, n_active)).long()
        ph = torch.remainder(ph, lookup(self.phase_steps, n_active))
        fields = torch.cat([(level.long() + lookup(self.level_offset, n_active))[..., None], rel.long(), ph], -1)
        return (fields * lookup(self.scale, n_active)).sum(-1)


class UnpackTables:
    """:func:`unpack` in every layout of ``table`` at once, as lookups (the decoder's, in PyTorch and in
    an ONNX export alike): each frame's layout is picked by its count of active harmonics, its fields
    are cut out by one integer division and remainder with that layout's divisors, and its levels and
    phases are read from tables of every value each field can take. The tables hold what :func:`unpack`
    computes, by the same operations on every field value, so the results are the same bit for bit;
    an exported graph takes some twenty nodes where a chain of shifts, masks and selects per layout
    and harmonic took over a hundred (docs/onnx.md)."""

    def __init__(self, table: dict[int, Layout], harmonics: int, dtype: torch.dtype, device: torch.device) -> None:
        self.harmonics = h = harmonics
        rows = [table.get(n) for n in range(harmonics + 1)]      # row 0: no active harmonic, no code
        used = [t for t in rows if t is not None]
        self.level_values = lv = 1 << max(t.level_bits for t in used)
        self.amp_values = av = 1 << max(max((a for a, _, _ in t.harmonics), default=0) for t in used)
        self.phase_values = pv = 1 << max(max((p for _, _, p in t.harmonics), default=0) for t in used)
        divisor = torch.ones(h + 1, 1 + 2 * h, dtype=torch.long)      # fields: level, amplitudes, phases
        modulus = torch.ones_like(divisor)                             # 1: an absent field reads 0
        amp_db = torch.zeros(h + 1, h, lv, av, dtype=dtype)
        phase = torch.zeros(h + 1, h, pv, dtype=dtype)
        levels, amps = torch.arange(lv), torch.arange(av)
        for n, layout in enumerate(rows):
            if layout is None:
                continue
            divisor[n] = torch.tensor(field_multipliers(layout, h))
            modulus[n, 0] = 1 << layout.level_bits
            for i, (amp_bits, _, phase_bits) in enumerate(layout.harmonics):
                steps = 1 << phase_bits
                modulus[n, 1 + i], modulus[n, 1 + h + i] = 1 << amp_bits, steps
                phase[n, i, :steps] = torch.arange(steps).to(dtype) * (2 * math.pi / steps)
            # as unpack: the level's dB less each amplitude's, in the default dtype, then cast
            level_db = (levels - (1 << layout.level_bits) + 1) * layout.level_step_db
            for i in range(h):
                if i < len(layout.harmonics):
                    amp_db[n, i] = (level_db[:, None] - (amps * layout.harmonics[i][1])[None]).to(dtype)
                else:
                    amp_db[n, i] = -200.0
        self.divisor, self.modulus = divisor.to(device), modulus.to(device)
        self.amp_db, self.phase = amp_db.flatten().to(device), phase.flatten().to(device)
        self.harmonic = torch.arange(h, device=device)

    def unpack(self, codes: torch.Tensor, n_active: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes and active harmonics ``[B, F]`` -> ``(has_code [B, F], amp_db [B, F, H], phase [B, F, H])``."""
        h = self.harmonics
        fields = torch.remainder(torch.div(codes[..., None], lookup(self.divisor, n_active), rounding_mode="floor"),
                                 lookup(self.modulus, n_active))                           # [B, F, 1 + 2H]
        level, amp, ph = fields[..., :1], fields[..., 1:1 + h], fields[..., 1 + h:]
        row = n_active[..., None] * h + self.harmonic                               # [B, F, H]
        amp_db = lookup(self.amp_db, (row * self.level_values + level) * self.amp_values + amp)
        phase = lookup(self.phase, row * self.phase_values + ph)
        return (level[..., 0] > NONE) & (n_active > 0), amp_db, phase


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

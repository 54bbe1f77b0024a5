"""The token layout: which bits of which token carry which part of a model's code.

A frame's tokens are ``n_stages`` integers of ``bits_per_token`` bits (``[B, n_q, F]``, int64); a
bitrate sends the first ``n_q`` of them. A model's code has sub-codes, each a few symbols per
frame in some of those rows:

* ``latent``: the stages of the neural latent's residual quantiser (``lrac/quant``), one per row;
* ``pitch``: the frame family's pitch symbols (``lrac/models/pitch.py``), in the low bits of the
  first rows (3 bits of row 0, 4 of row 1 in the shipped models), which leaves those rows' latent
  stages fewer codes; the bitrates stay;
* ``lowband``: the frame family's low-band waveform code (``lrac/models/lowband.py``), whole rows at
  the end (rows 4-5 of 6 for three harmonics), so only the highest bitrate carries it.

Within a row the sub-codes are packed from the most significant bits down, in the order they are
declared, and every row's bits are spent. :func:`token_layout` declares a model's sub-codes from its
config; a new sub-code is one more :class:`SubCode` there.
Nothing else in lrac needs to know where a sub-code's bits are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig, QuantizerConfig
from .models.lowband import ROW_BITS, row_bits

LATENT = "latent"   # the sub-code of the residual quantiser, which every model has


@dataclass(frozen=True)
class SubCode:
    """A part of the code: ``bits[i]`` bits in token row ``first_row + i``."""

    name: str
    bits: tuple[int, ...]
    first_row: int = 0

    @property
    def rows(self) -> range:
        return range(self.first_row, self.first_row + len(self.bits))

    def rows_carried(self, n_q: int) -> int:
        """How many of its rows the first ``n_q`` tokens carry."""
        return max(0, min(n_q, self.rows.stop) - self.first_row)


class TokenLayout:
    """Tokens of ``bits_per_token`` bits in ``n_stages`` rows, shared by ``subcodes``.

    Symbols of a sub-code are ``[B, rows, F]`` integers, row ``i`` below ``2 ** bits[i]``. A sub-code
    none of whose rows a bitrate carries is absent from :meth:`unpack` and :meth:`carried`."""

    def __init__(self, bits_per_token: int, n_stages: int, subcodes: list[SubCode]) -> None:
        self.bits_per_token, self.n_stages = bits_per_token, n_stages
        self.subcodes = {s.name: s for s in subcodes}
        if LATENT not in self.subcodes or len(self.subcodes) != len(subcodes):
            raise ValueError(f"a token layout needs one {LATENT!r} sub-code and unique names, "
                             f"got {[s.name for s in subcodes]}")
        used = [0] * n_stages
        for s in subcodes:
            if s.first_row < 0 or s.rows.stop > n_stages or min(s.bits, default=0) < 1:
                raise ValueError(f"sub-code {s.name!r}: rows {list(s.rows)} of {list(s.bits)} bits do "
                                 f"not fit {n_stages} tokens")
            for row, bits in zip(s.rows, s.bits):
                used[row] += bits
        if any(u != bits_per_token for u in used):
            raise ValueError(f"the sub-codes take {used} bits of the tokens' rows, which have "
                             f"{bits_per_token} bits each")

    @property
    def values(self) -> int:
        """The number of token values, ``2 ** bits_per_token``."""
        return 1 << self.bits_per_token

    def bits(self, name: str) -> tuple[int, ...]:
        """Bits per row of sub-code ``name``."""
        return self.subcodes[name].bits

    def rows_carried(self, name: str, n_q: int) -> int:
        """How many rows of sub-code ``name`` the first ``n_q`` tokens carry (the latent's: the
        quantiser stages a bitrate uses)."""
        return self.subcodes[name].rows_carried(n_q)

    def carried(self, parts: dict[str, torch.Tensor], n_q: int) -> dict[str, torch.Tensor]:
        """The rows of ``parts`` (sub-code name -> ``[B, rows, F]``) that the first ``n_q`` tokens
        carry: what :meth:`unpack` gives back after :meth:`pack`."""
        out = {}
        for name, symbols in parts.items():
            rows = self.subcodes[name].rows_carried(n_q)
            if rows:
                out[name] = symbols[:, :rows]
        return out

    def pack(self, parts: dict[str, torch.Tensor], n_q: int) -> torch.Tensor:
        """Sub-code symbols (every sub-code, at least its carried rows) -> tokens ``[B, n_q, F]``."""
        latent = parts[LATENT]
        # rows built apart and stacked once (no in-place row writes: fewer nodes in an exported graph)
        rows: list = [latent.new_zeros(latent.shape[0], latent.shape[-1], dtype=torch.long)] * n_q
        for name, sub in self.subcodes.items():
            for i in range(sub.rows_carried(n_q)):
                row = sub.first_row + i
                rows[row] = (rows[row] << sub.bits[i]) | parts[name][:, i].long()
        return torch.stack(rows, 1)

    def unpack(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tokens ``[B, n_q, F]`` -> the symbols of each sub-code they carry (the inverse of :meth:`pack`)."""
        rows = list(tokens.long().unbind(1))
        symbols: dict[str, list[torch.Tensor]] = {}
        for name, sub in reversed(self.subcodes.items()):   # the last declared sit in the low bits
            for i in reversed(range(sub.rows_carried(tokens.shape[1]))):
                row = sub.first_row + i
                symbols.setdefault(name, []).insert(0, rows[row] & ((1 << sub.bits[i]) - 1))
                rows[row] = rows[row] >> sub.bits[i]
        return {name: torch.stack(symbols[name], 1) for name in self.subcodes if name in symbols}


def token_layout(model: ModelConfig, quantizer: QuantizerConfig) -> TokenLayout:
    """The layout of a model: the frame family's pitch symbols (with a pitch path) in the low bits of
    the first rows, the latent's stages in the rest of every row."""
    bits = quantizer.codebook_size.bit_length() - 1
    if quantizer.codebook_size != 1 << bits:
        raise ValueError(f"quantizer.codebook_size must be a power of two, got {quantizer.codebook_size}")
    pitch = model.frame.pitch if model.family == "frame" else None
    pitch_bits = pitch.symbol_bits if pitch is not None else ()
    if len(pitch_bits) > quantizer.n_stages or any(b >= bits for b in pitch_bits):
        raise ValueError(f"the pitch symbols' bits {list(pitch_bits)} (model.frame.pitch) do not fit in "
                         f"{quantizer.n_stages} tokens of {bits} bits beside the latent")
    lowband = model.frame.lowband if pitch is not None else None
    lowband_bits = row_bits(lowband.harmonics) if lowband is not None else ()
    latent_rows = quantizer.n_stages - len(lowband_bits)
    if lowband_bits and (bits != ROW_BITS or latent_rows < max(len(pitch_bits), 1)):
        raise ValueError(f"the low-band code ({len(lowband_bits)} tokens of {ROW_BITS} bits) needs tokens of "
                         f"{ROW_BITS} bits and leaves the latent and the pitch too few of the {quantizer.n_stages}")
    latent = tuple(bits - (pitch_bits[row] if row < len(pitch_bits) else 0) for row in range(latent_rows))
    subcodes = [SubCode(LATENT, latent)] + ([SubCode("pitch", pitch_bits)] if pitch_bits else [])
    if lowband_bits:
        subcodes.append(SubCode("lowband", lowband_bits, first_row=latent_rows))
    return TokenLayout(bits, quantizer.n_stages, subcodes)

"""Packet-loss concealment: what the decoder gets for frames whose tokens never arrived.

A lost packet loses every token of its frames at once (all stages of every sub-code:
lrac/tokens.py), so concealment works on the decoder's inputs, frame by frame: the latent
``[B, D]`` and the symbols of each other sub-code (the pitch: ``[B, rows]``). A new sub-code is
concealed as the others are, by name; the decoder itself runs unchanged, with its state, and needs
no look-ahead beyond its own.

Methods (``METHODS``):

* ``"learned"``: the decoder's learned missing latent (``Decoder.missing_latent``, trained with
  frame erasures: ``train.erasure_prob``); the stateful decoder extrapolates from its context.
* ``"repeat"``: the last received latent, held for ``HOLD_FRAMES``, then faded linearly over
  ``FADE_FRAMES`` towards the latent of digital silence.
* ``"zero"``: the latent and symbols of digital silence, as if the lost audio were zeros: the
  reference a codec without concealment gives.

Symbols under "learned" and "repeat" repeat those of the last received frame at the same position
of their sub-code's period (``periods``: the pitch code spreads over 2 frames, so the whole last
code repeats) until the frame ``HOLD_FRAMES + FADE_FRAMES // 2`` of a burst, and are silence's
(unvoiced) after it. A sub-code of period 0 is never repeated: its lost frames get silence's symbols
at once (the low-band code: a phase held over a lost frame would be wrong; without a code the
decoder's own low band, concealed with the latent, takes over). "Silence" is the model's own coding of zeros
(:meth:`lrac.codec.Generator.silence`), one frame per position of the longest period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

METHODS = ("learned", "repeat", "zero")
HOLD_FRAMES = 4     # a repeated latent holds its level for 40 ms ...
FADE_FRAMES = 16    # ... and fades to silence over the next 160 ms (validation clips: docs/packet_loss.md)

Symbols = dict[str, torch.Tensor]


@dataclass
class ConcealState:
    """What concealment remembers between the chunks of a stream (a fresh one for each stream)."""

    frame: int = 0                              # frames seen so far (positions in the periods)
    run: torch.Tensor | None = None             # [B] frames lost in a row, up to now
    last_latent: torch.Tensor | None = None     # [B, D] the last received latent
    history: Symbols = field(default_factory=dict)   # name -> [B, rows, period], by position


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown concealment {method!r}; methods: {', '.join(METHODS)}")
    return method


def fade_weight(run: torch.Tensor) -> torch.Tensor:
    """Share of the last received latent in the ``run``-th lost frame of a burst (1 = held)."""
    return (1 - (run - HOLD_FRAMES).clamp(min=0) / FADE_FRAMES).clamp(min=0)


def conceal(latent: torch.Tensor, symbols: Symbols, lost: torch.Tensor | None,
            silence: tuple[torch.Tensor, Symbols], method: str,
            missing_latent: torch.Tensor | None = None, periods: dict[str, int] | None = None,
            state: ConcealState | None = None) -> tuple[torch.Tensor, Symbols]:
    """Decoder inputs with the lost frames filled in.

    Args:
        latent: ``[B, D, F]`` quantised latent (any values where lost).
        symbols: sub-code name -> ``[B, rows, F]`` int64 symbols (any values where lost).
        lost: ``[B, F]`` bool, True where a frame was lost; None: nothing lost.
        silence: ``(latent [1, D, P], {name: [1, rows, P]})``, digital silence coded, at the
            positions ``0..P-1`` of the longest period.
        method: one of :data:`METHODS`.
        missing_latent: ``[D]``, the decoder's learned missing latent (for "learned").
        periods: frames of one code of a sub-code (1 when absent); frame ``f`` is at position
            ``f % period`` counted from the stream's start.
        state: a stream's :class:`ConcealState` (updated); None: ``latent`` is a whole stream.

    Returns ``(latent, symbols)`` shaped as given; the received frames are unchanged (gradients
    reach ``latent`` there and ``missing_latent`` where it fills in)."""
    state = state if state is not None else ConcealState()
    periods = periods or {}
    b, _, n = latent.shape
    device = latent.device
    silent_latent, silent_symbols = silence
    quiet = silent_latent.shape[-1]
    if state.run is None:
        state.run = torch.zeros(b, dtype=torch.long, device=device)
        state.last_latent = silent_latent[:, :, 0].expand(b, -1).to(latent.dtype)
    lost = torch.zeros(b, n, dtype=torch.bool, device=device) if lost is None else lost.to(device)
    frames = torch.arange(n, device=device)
    # the last received frame up to each frame (-1: none in this chunk), and the run of losses
    last = torch.where(lost, -1, frames).cummax(-1).values                      # [B, F]
    run = torch.where(last >= 0, frames - last, frames + 1 + state.run[:, None])
    earlier = latent.detach().gather(-1, last.clamp(min=0)[:, None].expand_as(latent))
    earlier = torch.where((last >= 0)[:, None], earlier, state.last_latent[:, :, None])
    silent_now = silent_latent[:, :, (state.frame + frames) % quiet].to(latent.dtype)
    if method == "zero":
        fill = silent_now
    elif method == "repeat":
        w = fade_weight(run)[:, None].to(latent.dtype)
        fill = w * earlier + (1 - w) * silent_now
    else:
        fill = missing_latent.to(latent.dtype)[None, :, None]
    out = torch.where(lost[:, None], fill, latent)
    keep = (run <= HOLD_FRAMES + FADE_FRAMES // 2) & (method != "zero")
    out_symbols = {name: _conceal_symbols(name, x, lost, keep & (periods.get(name, 1) > 0), silent_symbols[name],
                                          max(periods.get(name, 1), 1), state) for name, x in symbols.items()}
    if n:
        state.run = run[:, -1]
        state.last_latent = earlier[:, :, -1]
    state.frame += n
    return out, out_symbols


def _conceal_symbols(name: str, x: torch.Tensor, lost: torch.Tensor, keep: torch.Tensor,
                     silent: torch.Tensor, period: int, state: ConcealState) -> torch.Tensor:
    """One sub-code's symbols ``[B, rows, F]``: lost frames repeat the last received frame at their
    position of the period (where ``keep``), else silence's."""
    b, rows, n = x.shape
    silent = silent[:, :rows].to(x.dtype)
    if name not in state.history or state.history[name].shape[1] != rows:    # (another bitrate)
        at = torch.arange(period, device=x.device) % silent.shape[-1]
        state.history[name] = silent[:, :, at].expand(b, -1, -1).clone()
    history = state.history[name]
    frames = torch.arange(n, device=x.device)
    pos = (state.frame + frames) % period
    repeated = torch.empty_like(x)
    for p in range(period):
        cols = frames[pos == p]
        src = torch.where(lost[:, cols], -1, cols).cummax(-1).values            # [B, F / period]
        got = x.gather(-1, src.clamp(min=0)[:, None].expand(-1, rows, -1))
        repeated[:, :, cols] = torch.where((src >= 0)[:, None], got, history[:, :, p, None])
        if cols.numel():
            history[:, :, p] = repeated[:, :, cols[-1]]
    quiet = silent[:, :, (state.frame + frames) % silent.shape[-1]]
    return torch.where(lost[:, None], torch.where(keep[:, None], repeated, quiet), x)

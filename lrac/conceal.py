"""Packet-loss concealment: what the decoder gets for frames whose tokens never arrived.

A lost packet loses every token of its frames at once (all stages of every sub-code:
lrac/tokens.py), so concealment works on the decoder's inputs, frame by frame: the latent
``[B, D]`` and the symbols of each other sub-code (the pitch: ``[B, rows]``). A new sub-code is
concealed as the others are, by name; the decoder itself runs unchanged, with its state, and needs
no look-ahead beyond its own.

Methods (``METHODS``):

* ``"learned"``: the decoder's learned missing latent (``Decoder.missing_latent``, trained with
  frame erasures: ``train.erasure_prob``) for the first ``HOLD_FRAMES`` lost frames of a burst, the
  stateful decoder extrapolating from its context; "repeat"'s fill after them (in longer bursts
  the extrapolation scores lower on PLCMOS than the held and faded last latent; docs/packet_loss.md).
* ``"repeat"``: the last received latent, held for ``HOLD_FRAMES``, then faded linearly over
  ``FADE_FRAMES`` towards the latent of digital silence.
* ``"zero"``: the latent and symbols of digital silence, as if the lost audio were zeros: the
  reference a codec without concealment gives.

Symbols under "learned" and "repeat" follow each row's period (``periods``: frames of one code of
each row of a sub-code). A row of period ``P >= 1`` repeats the last received frame at the same
position of its period until the frame ``HOLD_FRAMES + FADE_FRAMES // 2`` of a burst, and is silence's
after it: the pitch code's first row spreads over 2 frames, so the whole last code repeats, and its
refinement row (period 1) holds the last frame's pitch. A row of period 0 is extrapolated by the
decoder itself: up to the same frame its lost frames carry ``-r`` (``r`` the frame's
place in the burst, 1, 2, ...: negative, no code), then silence's symbols. The low-band code is such a row: its
decoder continues the last received harmonics at the decoded pitch (lrac/models/lowband.py); a
phase repeated as a symbol would be wrong by a frame's turn. "Silence" is the model's own coding of
zeros (:meth:`lrac.codec.Generator.silence`), one frame per position of the longest period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

METHODS = ("learned", "repeat", "zero")
HOLD_FRAMES = 4     # learned fills, and a repeated latent holds its level, for 40 ms ...
FADE_FRAMES = 16    # ... and fades to silence over the next 160 ms (validation clips: docs/packet_loss.md)

Symbols = dict[str, torch.Tensor]
Periods = dict[str, tuple[int, ...]]   # sub-code -> frames of one code, per row (the last entry for rows beyond)


@dataclass
class ConcealState:
    """What concealment remembers between the chunks of a stream (a fresh one for each stream)."""

    frame: int = 0                              # frames seen so far (positions in the periods)
    run: torch.Tensor | None = None             # [B] frames lost in a row, up to now
    last_latent: torch.Tensor | None = None     # [B, D] the last received latent
    history: Symbols = field(default_factory=dict)   # (name, row) -> [B, period], by position


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown concealment {method!r}; methods: {', '.join(METHODS)}")
    return method


def fade_weight(run: torch.Tensor) -> torch.Tensor:
    """Share of the last received latent in the ``run``-th lost frame of a burst (1 = held)."""
    return (1 - (run - HOLD_FRAMES).clamp(min=0) / FADE_FRAMES).clamp(min=0)


def last_received(lost: torch.Tensor) -> torch.Tensor:
    """The last received frame up to each frame, ``[B, F]`` (-1: none), of ``lost [B, F]`` (bool)."""
    frames = torch.arange(lost.shape[-1], device=lost.device)
    return torch.where(lost, -1, frames).cummax(-1).values


def conceal(latent: torch.Tensor, symbols: Symbols, lost: torch.Tensor | None,
            silence: tuple[torch.Tensor, Symbols], method: str,
            missing_latent: torch.Tensor | None = None, periods: Periods | None = None,
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
        periods: frames of one code of each row of a sub-code (1 when absent; 0: extrapolated by
            the decoder); frame ``f`` is at position ``f % period`` counted from the stream's start.
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
    last = last_received(lost)                                                  # [B, F]
    run = torch.where(last >= 0, frames - last, frames + 1 + state.run[:, None])
    earlier = latent.detach().gather(-1, last.clamp(min=0)[:, None].expand_as(latent))
    earlier = torch.where((last >= 0)[:, None], earlier, state.last_latent[:, :, None])
    silent_now = silent_latent[:, :, (state.frame + frames) % quiet].to(latent.dtype)
    if method == "zero":
        fill = silent_now
    else:
        w = fade_weight(run)[:, None].to(latent.dtype)
        fill = w * earlier + (1 - w) * silent_now
        if method == "learned":
            fill = torch.where((run <= HOLD_FRAMES)[:, None], missing_latent.to(latent.dtype)[None, :, None], fill)
    out = torch.where(lost[:, None], fill, latent)
    keep = (run <= HOLD_FRAMES + FADE_FRAMES // 2) & (method != "zero")
    out_symbols = {}
    for name, x in symbols.items():
        rows = []
        for r in range(x.shape[1]):
            row_periods = periods.get(name, (1,))
            period = row_periods[min(r, len(row_periods) - 1)]
            rows.append(_conceal_row((name, r), x[:, r], lost, keep, run, silent_symbols[name][:, r], period, state))
        out_symbols[name] = torch.stack(rows, 1) if rows else x
    if n:
        state.run = run[:, -1]
        state.last_latent = earlier[:, :, -1]
    state.frame += n
    return out, out_symbols


def _conceal_row(key: tuple[str, int], x: torch.Tensor, lost: torch.Tensor, keep: torch.Tensor, run: torch.Tensor,
                 silent: torch.Tensor, period: int, state: ConcealState) -> torch.Tensor:
    """One row of a sub-code's symbols ``[B, F]``: lost frames repeat the last received frame at their
    position of the ``period`` (0: ``-r`` in the ``r``-th lost frame of a burst) where ``keep``, else silence's."""
    b, n = x.shape
    silent = silent.to(x.dtype)
    frames = torch.arange(n, device=x.device)
    quiet = silent[:, (state.frame + frames) % silent.shape[-1]]
    if period == 0:
        return torch.where(lost, torch.where(keep, -run.to(x.dtype), quiet), x)
    if key not in state.history:
        at = torch.arange(period, device=x.device) % silent.shape[-1]
        state.history[key] = silent[:, at].expand(b, -1).clone()
    history = state.history[key]
    pos = (state.frame + frames) % period
    repeated = torch.empty_like(x)
    for p in range(period):
        cols = frames[pos == p]
        src = torch.where(lost[:, cols], -1, cols).cummax(-1).values            # [B, F / period]
        got = x.gather(-1, src.clamp(min=0))
        repeated[:, cols] = torch.where(src >= 0, got, history[:, p, None])
        if cols.numel():
            history[:, p] = repeated[:, cols[-1]]
    return torch.where(lost, torch.where(keep, repeated, quiet), x)

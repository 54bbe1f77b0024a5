"""Generator halves. :class:`Encoder` and :class:`Decoder` build the family named in the config.

Families register a builder ``ModelConfig -> (encoder_net, decoder_net)`` in :data:`FAMILIES`:
``encoder_net.analyze`` maps ``[B, 1, T]`` to ``([B, D, T // hop], symbols)`` and ``decoder_net``
the reverse (symbols as keyword arguments), both made of
:class:`~lrac.models.streaming.StreamingModule` layers wherever they hold memory.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import ModelConfig
from .frame import build_frame
from .seanet import build_seanet

FAMILIES: dict[str, Callable[[ModelConfig], tuple[nn.Module, nn.Module]]] = {
    "seanet": build_seanet, "frame": build_frame}


def build_nets(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """``(encoder_net, decoder_net)`` of the family ``cfg`` names (a builder makes both halves at once)."""
    if cfg.family not in FAMILIES:
        raise ValueError(f"unknown model family {cfg.family!r}; families: {sorted(FAMILIES)}")
    return FAMILIES[cfg.family](cfg)


class Encoder(nn.Module):
    """Waveform ``[B, 1, T]`` at ``sample_rate`` -> latent ``[B, latent_dim, T // hop_length]``.

    ``T`` must be a multiple of ``hop_length`` (the codec pads whole frames). A family may also send
    symbols of its own beside the latent (the frame family's pitch: ``{"pitch": [B, rows, F]}``);
    :meth:`analyze` returns both, and ``lrac/tokens.py`` places them in the tokens. ``net``: the
    half :func:`build_nets` made, when the caller builds both (default: built here)."""

    def __init__(self, cfg: ModelConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else build_nets(cfg)[0]
        self.hop_length = self.net.hop_length
        self.latent_dim = cfg.latent_dim

    def analyze(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(latent [B, latent_dim, F], {sub-code name: symbols [B, rows, F] int64})``."""
        return self.net.analyze(wav)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.analyze(wav)[0]


class Decoder(nn.Module):
    """Latent ``[B, latent_dim, F]`` (and the symbols the encoder sent, by sub-code name)
    -> waveform ``[B, 1, F * hop_length]``. ``net`` as for :class:`Encoder`.

    :attr:`missing_latent` ``[latent_dim]`` is what the decoder gets for the first 40 ms of a
    burst of lost frames (lrac/conceal.py, "learned"); it starts at zero and learns only in
    training runs with frame erasures (``train.erasure_prob``); model files from before it existed
    load with it at zero.
    :attr:`symbol_periods` gives the frames one code of each row of a sub-code spans (the pitch
    code's group; 0: the decoder extrapolates the row's lost frames itself)."""

    def __init__(self, cfg: ModelConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else build_nets(cfg)[1]
        self.hop_length = self.net.hop_length
        self.latent_dim = cfg.latent_dim
        self.symbol_periods: dict[str, tuple[int, ...]] = dict(getattr(self.net, "symbol_periods", {}))
        # (registered last, so that it is the generator's last parameter: see GanStep.load_state_dict)
        self.missing_latent = nn.Parameter(torch.zeros(cfg.latent_dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # files written before the missing latent existed: it starts at zero, as a new model's does
        state_dict.setdefault(prefix + "missing_latent", torch.zeros_like(self.missing_latent))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, latent: torch.Tensor, symbols: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.net(latent, **(symbols or {}))


__all__ = ["Encoder", "Decoder", "FAMILIES", "build_nets"]

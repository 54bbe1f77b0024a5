"""The official LRAC baseline generator halves: causal SEANet encoder and decoder (spec §2)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig, SeanetDecoderConfig, SeanetEncoderConfig
from .conv import ResidualUnit, SConv1d, SConvTranspose1d, run_layers


def _lookahead_flags(config_lookahead: list[list[int]], block: int, unit: int) -> list[bool]:
    """Which of the two convs of residual unit ``unit`` in block ``block`` look ahead."""
    return [[block, unit, conv] in config_lookahead for conv in (0, 1)]


def _check_blocks(cfg: SeanetEncoderConfig | SeanetDecoderConfig, where: str) -> None:
    n = len(cfg.channels)
    lists = {"strides": cfg.strides, "res_kernels": cfg.res_kernels, "res_dilations": cfg.res_dilations}
    if isinstance(cfg, SeanetEncoderConfig):
        lists["down_kernels"] = cfg.down_kernels
    for name, values in lists.items():
        if len(values) != n:
            raise ValueError(f"{where}.{name} has {len(values)} entries, channels has {n}")
    for b, (ks, ds) in enumerate(zip(cfg.res_kernels, cfg.res_dilations)):
        if len(ks) != len(ds):
            raise ValueError(f"{where} block {b}: {len(ks)} kernel pairs but {len(ds)} dilation pairs")


class SeanetEncoder(nn.Module):
    """Waveform ``[B, 1, T]`` -> latent ``[B, latent_dim, T // hop]``; ``hop = prod(strides)``."""

    def __init__(self, cfg: SeanetEncoderConfig, latent_dim: int) -> None:
        super().__init__()
        _check_blocks(cfg, "model.encoder")
        widths = list(cfg.channels) + [latent_dim]
        layers: list[nn.Module] = [SConv1d(1, widths[0], cfg.input_kernel)]
        for b, width in enumerate(cfg.channels):
            for u, (ks, ds) in enumerate(zip(cfg.res_kernels[b], cfg.res_dilations[b])):
                layers.append(ResidualUnit(width, ks, ds, _lookahead_flags(cfg.lookahead, b, u)))
            layers += [nn.ELU(), SConv1d(width, widths[b + 1], cfg.down_kernels[b], stride=cfg.strides[b])]
        self.layers = nn.Sequential(*layers)
        self.hop_length = int(torch.tensor(cfg.strides).prod())

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return run_layers(self.layers, wav)

    def analyze(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The latent, and no symbols beside it."""
        return self(wav), {}


class SeanetDecoder(nn.Module):
    """Latent ``[B, latent_dim, F]`` -> waveform ``[B, 1, F * hop]`` in (-1, 1) (Tanh output)."""

    def __init__(self, cfg: SeanetDecoderConfig, latent_dim: int) -> None:
        super().__init__()
        _check_blocks(cfg, "model.decoder")
        widths = [latent_dim] + list(cfg.channels)
        layers: list[nn.Module] = []
        for b, width in enumerate(cfg.channels):
            stride = cfg.strides[b]
            layers += [nn.ELU(), SConvTranspose1d(widths[b], width, stride, stride)]
            for u, (ks, ds) in enumerate(zip(cfg.res_kernels[b], cfg.res_dilations[b])):
                layers.append(ResidualUnit(width, ks, ds, _lookahead_flags(cfg.lookahead, b, u)))
        layers += [nn.ELU(), SConv1d(widths[-1], 1, cfg.output_kernel), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        self.hop_length = int(torch.tensor(cfg.strides).prod())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return run_layers(self.layers, latent)


def build_seanet(cfg: ModelConfig) -> tuple[SeanetEncoder, SeanetDecoder]:
    enc = SeanetEncoder(cfg.encoder, cfg.latent_dim)
    dec = SeanetDecoder(cfg.decoder, cfg.latent_dim)
    if enc.hop_length != dec.hop_length:
        raise ValueError(f"encoder hop {enc.hop_length} != decoder hop {dec.hop_length}")
    return enc, dec

"""Residual vector quantiser with per-stage projections (spec §2.4, pitfall §7.2.1).

Stage ``i`` projects the current residual ``[B, D, F]`` to the codebook space (``D -> d``), picks the
nearest code, projects back (``d -> D``) and subtracts that from the residual: residuals live in the
latent space, after each stage's output projection.

A stage may have fewer bits than another (``stage_bits``): the token layout (``lrac/tokens.py``)
gives some of a token's bits to other sub-codes, and the stage in that token has the rest.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QuantizerConfig
from .fsq import ScalarCodebook, grid_with_bits
from .vq import EMACodebook


def make_codebook(cfg: QuantizerConfig, bits: int) -> EMACodebook | ScalarCodebook:
    """The codebook of one stage of ``bits`` bits: ``quantizer.kind`` "vq" (EMA, the baseline) or
    "fsq" (a grid; ``quantizer.fsq_levels`` is the grid of a whole token, ``codebook_size`` cells)."""
    if cfg.kind == "vq":
        return EMACodebook(1 << bits, cfg.codebook_dim)
    if cfg.kind == "fsq":
        full = ScalarCodebook(cfg.fsq_levels)
        if full.codebook_size != cfg.codebook_size:
            raise ValueError(f"quantizer.fsq_levels={cfg.fsq_levels} give {full.codebook_size} codes, "
                             f"but quantizer.codebook_size is {cfg.codebook_size}")
        return ScalarCodebook(grid_with_bits(cfg.fsq_levels, bits))
    raise ValueError(f"quantizer.kind must be 'vq' or 'fsq', got {cfg.kind!r}")


class QuantizerStage(nn.Module):
    """One RVQ stage: ``Linear(D, d)`` -> codebook -> ``Linear(d, D)``."""

    def __init__(self, latent_dim: int, cfg: QuantizerConfig, bits: int) -> None:
        super().__init__()
        # (projections first, as before FSQ existed, so a seed gives the baseline the same weights)
        dim = len(grid_with_bits(cfg.fsq_levels, bits)) if cfg.kind == "fsq" else cfg.codebook_dim
        self.project_in = nn.Linear(latent_dim, dim)
        self.project_out = nn.Linear(dim, latent_dim)
        self.codebook = make_codebook(cfg, bits)


class ResidualVQ(nn.Module):
    """Residual VQ over ``n_stages`` codebooks; stage ``s`` has ``2 ** stage_bits[s]`` codes
    (default: ``codebook_size`` codes each).

    Shapes: latent ``[B, D, F]``, indices ``[B, n_q, F]`` (int64, ``0 <= i < 2 ** stage_bits[s]``).
    """

    def __init__(self, latent_dim: int, cfg: QuantizerConfig, stage_bits: Sequence[int] | None = None) -> None:
        super().__init__()
        if cfg.codebook_size & (cfg.codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of two, got {cfg.codebook_size}")
        self.latent_dim = latent_dim
        full_bits = cfg.codebook_size.bit_length() - 1
        self.stage_bits = tuple(int(b) for b in stage_bits) if stage_bits is not None else (full_bits,) * cfg.n_stages
        if not all(0 < b <= full_bits for b in self.stage_bits):
            raise ValueError(f"stage bits {list(self.stage_bits)} must be in 1..{full_bits}")
        self.stages = nn.ModuleList(QuantizerStage(latent_dim, cfg, bits) for bits in self.stage_bits)

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def _check(self, n_q: int) -> None:
        if not 1 <= n_q <= self.n_stages:
            raise ValueError(f"n_q must be in 1..{self.n_stages}, got {n_q}")

    def forward(self, latent: torch.Tensor, n_q: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise with the first ``n_q`` stages; straight-through gradients to the encoder.

        Returns:
            ``(quantized [B, D, F], indices [B, n_q, F], commitment_loss scalar)``; the loss is
            ``MSE(code.detach(), projected)`` averaged over the active stages (zero for FSQ).
        """
        self._check(n_q)
        residual = latent.transpose(1, 2)  # [B, F, D]
        b, f, _ = residual.shape
        quantized = torch.zeros_like(residual)
        all_indices, losses = [], []
        for stage in self.stages[:n_q]:
            projected = stage.codebook.bound(stage.project_in(residual))  # [B, F, d]
            codes, indices = stage.codebook(projected.reshape(b * f, projected.shape[-1]))
            codes = codes.view_as(projected)
            if stage.codebook.commitment:
                losses.append(F.mse_loss(projected, codes.detach()))
            codes = projected + (codes - projected).detach()  # straight-through
            out = stage.project_out(codes)
            quantized = quantized + out
            residual = residual - out.detach()
            all_indices.append(indices.view(b, f))
        commit = torch.stack(losses).mean() if losses else latent.new_zeros(())
        return quantized.transpose(1, 2), torch.stack(all_indices, dim=1), commit

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """Latent ``[B, D, F]`` -> indices ``[B, n_q, F]`` (no codebook updates)."""
        self._check(n_q)
        residual = latent.transpose(1, 2)
        b, f, _ = residual.shape
        all_indices = []
        for stage in self.stages[:n_q]:
            projected = stage.codebook.bound(stage.project_in(residual))
            codes, indices = stage.codebook.quantize(projected.reshape(b * f, projected.shape[-1]))
            residual = residual - stage.project_out(codes.view(b, f, codes.shape[-1]))
            all_indices.append(indices.view(b, f))
        return torch.stack(all_indices, dim=1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, n_q, F]`` -> quantised latent ``[B, D, F]``."""
        self._check(indices.shape[1])
        out = 0
        for stage, idx in zip(self.stages, indices.unbind(1)):
            out = out + stage.project_out(stage.codebook.lookup(idx))
        return out.transpose(1, 2)

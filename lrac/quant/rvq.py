"""Residual vector quantiser with per-stage projections (spec §2.4, pitfall §7.2.1).

Stage ``i`` projects the current residual ``[B, D, F]`` to the codebook space (``D -> d``), picks the
nearest code, projects back (``d -> D``) and subtracts that from the residual: residuals live in the
latent space, after each stage's output projection.

Side bits. An encoder may send side symbols beside the latent (the frame family's pitch code):
``side_bits[s]`` bits per frame in the low bits of stage ``s``'s token. That stage then has
``codebook_size >> side_bits[s]`` codes, every token keeps ``log2(codebook_size)`` bits, and the
bitrates do not change (1 kbps = one token per 10 ms, pitch included). A bitrate of ``n_q`` stages
carries the side symbols of its first ``n_q`` stages only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QuantizerConfig
from .fsq import ScalarCodebook
from .vq import EMACodebook


def fsq_levels_less(levels: list[int], bits: int) -> list[int]:
    """An FSQ grid with ``bits`` fewer bits: halve the last dimensions' levels (dropping those that
    reach 1), e.g. ``[4, 4, 4, 4, 4]`` less 3 bits -> ``[4, 4, 4, 2]``. Levels must be powers of two."""
    out = list(levels)
    for _ in range(bits):
        if not out or out[-1] & (out[-1] - 1):
            raise ValueError(f"cannot take {bits} side bits from quantizer.fsq_levels={levels}: "
                             "the levels must be powers of two")
        out[-1] //= 2
        if out[-1] == 1:
            out.pop()
    return out


def make_codebook(cfg: QuantizerConfig, side_bits: int = 0) -> EMACodebook | ScalarCodebook:
    """The codebook of one stage: ``quantizer.kind`` "vq" (EMA, the baseline) or "fsq" (a grid),
    with ``codebook_size >> side_bits`` codes."""
    size = cfg.codebook_size >> side_bits
    if cfg.kind == "vq":
        return EMACodebook(size, cfg.codebook_dim, cfg.ema_decay, cfg.epsilon,
                           cfg.kmeans_iters, cfg.dead_code_threshold, cfg.dead_code_max_share)
    if cfg.kind == "fsq":
        codebook = ScalarCodebook(fsq_levels_less(cfg.fsq_levels, side_bits))
        if codebook.codebook_size != size:
            raise ValueError(f"quantizer.fsq_levels={cfg.fsq_levels} give {codebook.codebook_size << side_bits} "
                             f"codes, but quantizer.codebook_size is {cfg.codebook_size}")
        return codebook
    raise ValueError(f"quantizer.kind must be 'vq' or 'fsq', got {cfg.kind!r}")


class QuantizerStage(nn.Module):
    """One RVQ stage: ``Linear(D, d)`` -> codebook -> ``Linear(d, D)``."""

    def __init__(self, latent_dim: int, cfg: QuantizerConfig, side_bits: int = 0) -> None:
        super().__init__()
        # (projections first, as before FSQ existed, so a seed gives the baseline the same weights)
        dim = len(fsq_levels_less(cfg.fsq_levels, side_bits)) if cfg.kind == "fsq" else cfg.codebook_dim
        self.project_in = nn.Linear(latent_dim, dim)
        self.project_out = nn.Linear(dim, latent_dim)
        self.codebook = make_codebook(cfg, side_bits)


class ResidualVQ(nn.Module):
    """Residual VQ over ``n_stages`` codebooks of ``codebook_size`` codes.

    Shapes: latent ``[B, D, F]``, indices ``[B, n_q, F]`` (int64, ``0 <= i < codebook_size``;
    stage ``s``'s below ``codebook_size >> side_bits[s]`` until :meth:`join_side` adds the side
    symbols ``[B, S, F]``).
    """

    def __init__(self, latent_dim: int, cfg: QuantizerConfig, side_bits: tuple[int, ...] = ()) -> None:
        super().__init__()
        if cfg.codebook_size & (cfg.codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of two, got {cfg.codebook_size}")
        self.latent_dim = latent_dim
        self.codebook_size = cfg.codebook_size
        self.bits_per_index = cfg.codebook_size.bit_length() - 1
        self.side_bits = tuple(int(b) for b in side_bits)
        if len(self.side_bits) > cfg.n_stages or not all(0 < b < self.bits_per_index for b in self.side_bits):
            raise ValueError(f"side bits {list(self.side_bits)} do not fit in {cfg.n_stages} tokens of "
                             f"{self.bits_per_index} bits")
        self.stages = nn.ModuleList(
            QuantizerStage(latent_dim, cfg, self.side_bits[i] if i < len(self.side_bits) else 0)
            for i in range(cfg.n_stages))

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
            indices = stage.codebook.nearest(projected.reshape(b * f, projected.shape[-1])).view(b, f)
            residual = residual - stage.project_out(stage.codebook.lookup(indices))
            all_indices.append(indices)
        return torch.stack(all_indices, dim=1)

    def join_side(self, indices: torch.Tensor, side: torch.Tensor | None) -> torch.Tensor:
        """Indices ``[B, n_q, F]`` and side symbols ``[B, S, F]`` -> tokens ``[B, n_q, F]``: the index
        of each stage ``s < min(S, n_q)`` shifted up by ``side_bits[s]``, the symbol in the low bits."""
        if not self.side_bits:
            return indices
        tokens = indices.clone()
        for s in range(min(len(self.side_bits), indices.shape[1])):
            tokens[:, s] = (indices[:, s] << self.side_bits[s]) | side[:, s].to(indices.dtype)
        return tokens

    def split_side(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The inverse of :meth:`join_side`: ``(indices [B, n_q, F], side [B, min(S, n_q), F] or
        None)``."""
        if not self.side_bits:
            return tokens, None
        indices, side = tokens.clone(), []
        for s in range(min(len(self.side_bits), tokens.shape[1])):
            indices[:, s] = tokens[:, s] >> self.side_bits[s]
            side.append(tokens[:, s] & ((1 << self.side_bits[s]) - 1))
        return indices, torch.stack(side, 1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, n_q, F]`` -> quantised latent ``[B, D, F]``."""
        self._check(indices.shape[1])
        out = 0
        for stage, idx in zip(self.stages, indices.unbind(1)):
            out = out + stage.project_out(stage.codebook.lookup(idx))
        return out.transpose(1, 2)

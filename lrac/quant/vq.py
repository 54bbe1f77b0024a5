"""One EMA codebook: nearest-code search, k-means init, EMA updates, dead-code replacement (spec §2.4).

The codebook is a buffer, not a parameter: it learns by exponential moving averages of the vectors
assigned to each code, not by gradients. When ``torch.distributed`` is initialised, the statistics of
every update are all-reduced and random choices are broadcast from rank 0, so every rank keeps an
identical codebook.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.broadcast(t, src=0)
    return t


def _sample_rows(x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random rows of ``x [N, D]`` (with replacement when N < n)."""
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], device=x.device, generator=generator)[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device, generator=generator)
    return x[idx]


class EMACodebook(nn.Module):
    """``codebook_size`` codes of ``dim`` floats, updated by EMA in train mode.

    Args:
        decay: EMA decay of cluster sizes and sums (0.99).
        epsilon: Laplace smoothing of cluster sizes.
        kmeans_iters: k-means iterations on the first training batch (0 = random init from batch).
        dead_code_threshold: codes whose EMA cluster size falls below it are replaced every step.
    """

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 kmeans_iters: int = 50, dead_code_threshold: float = 2.0) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("embed", torch.randn(codebook_size, dim))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    # -- search ---------------------------------------------------------------------------------
    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (Euclidean) for each row of ``x [N, dim]`` -> ``[N]``."""
        dist_sq = (x.pow(2).sum(1, keepdim=True) - 2 * x @ self.embed.t()
                   + self.embed.pow(2).sum(1)[None, :])
        return dist_sq.argmin(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for integer ``indices [...]`` -> ``[..., dim]``."""
        return nn.functional.embedding(indices, self.embed)

    # -- training updates -------------------------------------------------------------------------
    @torch.no_grad()
    def kmeans_init(self, x: torch.Tensor) -> None:
        """k-means on ``x [N, dim]`` (all ranks' rows via all-reduced sums); sets codes and EMA state."""
        centroids = _broadcast(_sample_rows(x, self.codebook_size).contiguous())
        counts = torch.zeros(self.codebook_size, device=x.device)
        for _ in range(self.kmeans_iters):
            assign = (x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.t()
                      + centroids.pow(2).sum(1)[None, :]).argmin(1)
            counts = _all_reduce_sum(torch.bincount(assign, minlength=self.codebook_size).float())
            sums = _all_reduce_sum(torch.zeros_like(centroids).index_add_(0, assign, x))
            empty = counts == 0
            centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        self.embed.copy_(centroids)
        # EMA sums consistent with the counts, so the first EMA step keeps the centroids (EnCodec
        # stores the centroids themselves here, which shrinks every code on the first update).
        self.embed_avg.copy_(centroids * counts[:, None])
        self.cluster_size.copy_(counts)
        self.initialized.fill_(True)

    @torch.no_grad()
    def replace_dead_codes(self, x: torch.Tensor) -> int:
        """Re-seed codes used less than the threshold with random rows of ``x [N, dim]``."""
        dead = self.cluster_size < self.dead_code_threshold
        if not _distributed() and not bool(dead.any()):
            return 0
        new = _broadcast(_sample_rows(x, self.codebook_size).contiguous())
        self.embed.copy_(torch.where(dead[:, None], new, self.embed))
        self.embed_avg.copy_(torch.where(dead[:, None], new * self.dead_code_threshold, self.embed_avg))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size,
                                                                   self.dead_code_threshold),
                                            self.cluster_size))
        return int(dead.sum())

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, indices: torch.Tensor) -> None:
        """Move codes towards the (all-rank) mean of the rows assigned to them."""
        counts = _all_reduce_sum(torch.bincount(indices, minlength=self.codebook_size).float())
        sums = _all_reduce_sum(torch.zeros_like(self.embed).index_add_(0, indices, x))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise ``x [N, dim]`` -> ``(codes [N, dim], indices [N])``; updates itself in train mode.

        The returned codes are those before this step's update (as EnCodec/ESPnet do)."""
        x_detached = x.detach().float()
        if self.training and not bool(self.initialized):
            self.kmeans_init(x_detached)
        indices = self.nearest(x_detached)
        codes = self.lookup(indices)
        if self.training:
            self.replace_dead_codes(x_detached)
            self.ema_update(x_detached, indices)
        return codes, indices

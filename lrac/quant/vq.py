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
        dead_code_max_share: caps the threshold at this share of the frames a code gets per step on
            average (all ranks). The baseline's threshold of 2 assumes batch 384 (97.5 frames per
            code and step); at a CPU batch of 8 a code gets about 2, so an uncapped threshold re-seeds
            half the codebook every step and the quantiser never settles. At batch 384 and share
            0.1 the cap (9.75) is above 2 and the baseline rule holds unchanged.
    """

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 kmeans_iters: int = 50, dead_code_threshold: float = 2.0,
                 dead_code_max_share: float = 0.1) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.dead_code_max_share = dead_code_max_share
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("embed", torch.randn(codebook_size, dim))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    commitment = True  # the encoder commits to the codes (spec §2.4)

    # -- search ---------------------------------------------------------------------------------
    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors enter the codebook space as they are (``ScalarCodebook`` bounds them)."""
        return x

    def search_macs(self) -> int:
        """Multiply-accumulates of one nearest-code search (distances to every code)."""
        return self.codebook_size * self.dim

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

    def effective_dead_code_threshold(self, n_rows: int) -> float:
        """The threshold for a step that quantises ``n_rows`` vectors on this rank."""
        total = float(_all_reduce_sum(torch.tensor([float(n_rows)], device=self.embed.device))[0])
        return min(self.dead_code_threshold, self.dead_code_max_share * total / self.codebook_size)

    @torch.no_grad()
    def replace_dead_codes(self, x: torch.Tensor) -> int:
        """Re-seed codes used less than the threshold with random rows of ``x [N, dim]``."""
        threshold = self.effective_dead_code_threshold(x.shape[0])
        dead = self.cluster_size < threshold
        if not _distributed() and not bool(dead.any()):
            return 0
        new = _broadcast(_sample_rows(x, self.codebook_size).contiguous())
        self.embed.copy_(torch.where(dead[:, None], new, self.embed))
        self.embed_avg.copy_(torch.where(dead[:, None], new * threshold, self.embed_avg))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, threshold),
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

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lookup(indices), indices)`` of ``x [N, dim]``, the nearest codes (no update)."""
        indices = self.nearest(x)
        return self.lookup(indices), indices

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

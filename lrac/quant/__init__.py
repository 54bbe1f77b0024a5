"""Quantisers: :class:`ResidualVQ` over :class:`EMACodebook` stages."""

from .rvq import ResidualVQ
from .vq import EMACodebook

__all__ = ["ResidualVQ", "EMACodebook"]

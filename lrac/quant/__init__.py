"""Quantisers: :class:`ResidualVQ` over :class:`EMACodebook` (baseline) or :class:`ScalarCodebook`
(FSQ) stages."""

from .fsq import ScalarCodebook
from .rvq import ResidualVQ
from .vq import EMACodebook

__all__ = ["ResidualVQ", "EMACodebook", "ScalarCodebook"]

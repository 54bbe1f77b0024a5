"""Shared fixtures: small deterministic audio, trained-looking codecs, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# the frame family with a plain iSTFT head: t1 without its pitch path (nor the low-band code, which
# needs it)
PLAIN_HEAD = ["model.frame.pitch=null", "model.frame.lowband=null"]


def shared_data() -> Path | None:
    """``$LRAC_DATA`` or ``<repo>/../shared/data`` when present, else None."""
    path = Path(os.environ.get("LRAC_DATA", REPO.parent / "shared" / "data"))
    return path if (path / "splits").is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip("shared data folder not found (set LRAC_DATA or place it at ../shared/data)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def speechlike(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """Harmonic tone with a moving pitch and an amplitude envelope, in [-0.5, 0.5]: ``[T]`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    x = x * env + 0.01 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)

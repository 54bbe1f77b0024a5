"""The mel filterbank of lrac: triangular filters of equal area on a mel scale, numpy only.

Two mel scales are in use, and both are kept because results were measured with them: the
training losses use Slaney's (linear below 1 kHz, logarithmic above; librosa's default, as ESPnet's
mel loss), the ``mel_distance`` metric and the scorer's delay search use HTK's
(``2595 log10(1 + f / 700)``). Imports nothing of lrac.
"""

from __future__ import annotations

import math

import numpy as np

_F_SP = 200.0 / 3          # Hz per mel below the break frequency (Slaney's linear part)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Hz -> mel on the ``"slaney"`` or ``"htk"`` scale."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    _check_scale(scale)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    mel[log_part] = _MIN_LOG_MEL + np.log(hz[log_part] / _MIN_LOG_HZ) / _LOG_STEP
    return mel


def mel_to_hz(mel: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10 ** (mel / 2595.0) - 1.0)
    _check_scale(scale)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel[log_part] - _MIN_LOG_MEL))
    return hz


def _check_scale(scale: str) -> None:
    if scale not in ("slaney", "htk"):
        raise ValueError(f"mel scale must be 'slaney' or 'htk', got {scale!r}")


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, scale: str = "slaney") -> np.ndarray:
    """Triangular filters with edges equally spaced on the mel ``scale`` from ``fmin`` to ``fmax``
    (default Nyquist), each normalised to equal area (Slaney's normalisation; with the Slaney scale
    what ``librosa.filters.mel`` computes).

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` float64 weights; row ``m`` maps a magnitude spectrum to band ``m``.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]), scale)[0],
                                     hz_to_mel(np.array([fmax]), scale)[0], n_mels + 2), scale)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None] - lower) / (centre - lower)
    falling = (upper - fft_hz[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))

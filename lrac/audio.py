"""Read, check, downmix, resample and write audio. Every audio error message of lrac lives here.

Arrays are float32 numpy, mono ``[T]`` in [-1, 1] unless said otherwise. Imports nothing of lrac.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """Audio that cannot be used; the message is one line naming the file and the problem."""


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy ``resample_poly``, Kaiser window).

    Args:
        audio: ``[..., T]`` float array at ``rate_in`` Hz.
    Returns:
        ``[..., round(T * rate_out / rate_in)]`` float32 at ``rate_out`` Hz.
    """
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    # imported here: scipy.signal takes about a second to import, which every command would pay
    from scipy.signal import resample_poly

    ratio = Fraction(int(rate_out), int(rate_in))
    out = resample_poly(np.asarray(audio, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32)


def check_waveform(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Refuse empty audio and audio with NaN or infinite samples; return it as float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or audio.shape[-1] == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.all(np.isfinite(audio)):
        bad = int(np.sum(~np.isfinite(audio)))
        raise AudioError(f"{name}: {bad} sample(s) are NaN or infinite")
    return audio


def load_audio(path: str | Path, sample_rate: int | None = None, warn_stereo: bool = True
               ) -> tuple[np.ndarray, int]:
    """Read any file soundfile reads, as mono float32.

    Multi-channel audio is averaged to mono (with a warning). With ``sample_rate`` the audio is
    resampled to it. Raises :class:`AudioError` for a missing, unreadable, empty or non-finite file.

    Returns:
        ``(audio [T], rate)`` where rate is ``sample_rate`` if given, else the file's rate.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, expected an audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: cannot read audio ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if data.shape[1] > 1:
        if warn_stereo:
            warnings.warn(f"{path}: {data.shape[1]} channels, averaged to mono", stacklevel=2)
        data = data.mean(axis=1, keepdims=True)
    audio = check_waveform(data[:, 0], str(path))
    if sample_rate is not None and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, int(rate)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono ``[T]`` audio (clipped to [-1, 1] for integer formats); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    sf.write(str(path), audio, int(sample_rate), subtype=subtype)


def active_power(audio: np.ndarray, sample_rate: int, frame_ms: float = 20.0, floor_db: float = -50.0
                 ) -> float:
    """Mean power of the non-silent frames of ``[T]`` audio.

    Frames more than ``floor_db`` below the loudest frame count as silence. Returns 0 for silence."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    frame = max(1, int(sample_rate * frame_ms / 1000))
    n = len(audio) // frame
    if n == 0:
        return float(np.mean(audio ** 2)) if len(audio) else 0.0
    powers = np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)
    peak = float(powers.max())
    if peak <= 0:
        return 0.0
    active = powers[powers >= peak * 10 ** (floor_db / 10)]
    return float(active.mean())


def db(value: float) -> float:
    """10 log10 of a power, -inf for 0."""
    return 10 * math.log10(value) if value > 0 else -math.inf


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".opus"}

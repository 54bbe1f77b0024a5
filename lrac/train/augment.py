"""On-the-fly noise and reverberation (spec §3.4), applied to each whole utterance before chunking.

Track 2 (enhancement), as the baseline's ``EnhPreprocessor`` does it:

* reverb with probability ``reverb_prob`` (0.5): convolve with a random RIR, keep the original length,
  rescale to the dry speech's non-silent power. The *target* is then the early-reflection signal:
  the speech convolved with the RIR cut at its peak + ``early_reflection_ms`` (50 ms), power-matched
  the same way. Without reverb the target is the dry speech.
* noise with probability ``noise_prob`` (0.8), independently: a random noise file, randomly cropped
  (or wrapped when too short), scaled to an SNR drawn uniformly from ``snr_db`` ([-5, 30] dB) against
  the non-silent power of the (possibly reverberant) speech and the mean power of the noise crop.
* if the mix peaks above 1, input and target are divided by that peak together.

Track 1 (transparency) trains on the speech as it is: target = input, no augmenter.

When reverb is wanted but no RIR list is given, rooms are simulated with pyroomacoustics (image
method, room sizes and RT60 drawn from ``room_size_m`` and ``rt60_s``); without pyroomacoustics a
synthetic exponentially decaying RIR is used and a warning says so.

Arrays are float32 mono ``[T]`` at ``sample_rate``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.signal import fftconvolve

from lrac.audio import AudioError, active_power, load_audio
from lrac.config import DataConfig

ROOM_POOL = 256  # simulated rooms are memoised; a draw picks one of this many (seeded) rooms


@dataclass
class Augmented:
    """Result of one augmentation: model ``input``/``target`` ``[T]`` plus what was drawn."""

    input: np.ndarray
    target: np.ndarray
    snr_db: float | None = None      # drawn SNR, None without noise
    rir: np.ndarray | None = None    # RIR used, None without reverb
    clip_scale: float = 1.0          # factor both signals were multiplied by to avoid clipping


# --------------------------------------------------------------------------------------------
# building blocks (pure functions, tested one by one)
# --------------------------------------------------------------------------------------------


def match_power(audio: np.ndarray, power: float, sample_rate: int) -> np.ndarray:
    """Scale ``audio`` so its non-silent power equals ``power``."""
    current = active_power(audio, sample_rate)
    return (audio * np.sqrt(power / max(current, 1e-10))).astype(np.float32)


def early_rir(rir: np.ndarray, sample_rate: int, early_ms: float) -> np.ndarray:
    """The RIR up to its peak (largest absolute value) plus ``early_ms``: direct path + early reflections."""
    peak = int(np.argmax(np.abs(rir)))
    return rir[: peak + int(round(early_ms * sample_rate / 1000))]


def reverberate(speech: np.ndarray, rir: np.ndarray, sample_rate: int, early_ms: float = 50.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Convolve ``speech`` ``[T]`` with ``rir`` ``[L]``.

    Returns:
        ``(reverberant, early)``, both ``[T]`` (the convolution's first ``T`` samples) and rescaled to
        the non-silent power of ``speech``; ``early`` uses :func:`early_rir`.
    """
    power = active_power(speech, sample_rate)
    n = len(speech)
    reverberant = fftconvolve(speech, rir)[:n]
    early = fftconvolve(speech, early_rir(rir, sample_rate, early_ms))[:n]
    return match_power(reverberant, power, sample_rate), match_power(early, power, sample_rate)


def fit_noise(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample crop of ``noise``, or ``noise`` repeated (wrapped) when shorter."""
    if len(noise) >= length:
        start = int(rng.integers(0, len(noise) - length + 1))
        return noise[start:start + length]
    return np.resize(noise, length)  # np.resize repeats the array cyclically


def noise_gain(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int) -> float:
    """Gain for ``noise`` so that active_power(speech) / mean(noise**2) is ``snr_db``."""
    speech_power = active_power(speech, sample_rate)
    noise_power = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2))
    return float(10 ** (-snr_db / 20) * np.sqrt(speech_power / max(noise_power, 1e-10)))


def simulate_rir(rng: np.random.Generator, sample_rate: int, room_size_m: Sequence[float],
                 rt60_s: Sequence[float]) -> np.ndarray:
    """A shoebox-room RIR by the image method (pyroomacoustics).

    Length and width are drawn from ``room_size_m``, the height from [2.5, 4] m (capped by the
    largest size), RT60 from ``rt60_s``; source and microphone are placed uniformly at least 0.5 m
    from every wall. Raises ImportError when pyroomacoustics is missing.
    """
    import pyroomacoustics as pra

    lo, hi = float(room_size_m[0]), float(room_size_m[1])
    dims = [rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(min(2.5, hi), max(min(4.0, hi), 2.5))]
    rt60 = rng.uniform(float(rt60_s[0]), float(rt60_s[1]))
    for _ in range(8):  # a short RT60 in a large room needs absorption > 1: lengthen it until possible
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
            break
        except ValueError:
            rt60 *= 1.25
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    margin = 0.5
    room.add_source([rng.uniform(margin, d - margin) for d in dims])
    room.add_microphone([rng.uniform(margin, d - margin) for d in dims])
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float32)


def synthetic_rir(rng: np.random.Generator, sample_rate: int, rt60_s: Sequence[float]) -> np.ndarray:
    """Fallback RIR without pyroomacoustics: a direct impulse then Gaussian noise decaying 60 dB in RT60."""
    rt60 = rng.uniform(float(rt60_s[0]), float(rt60_s[1]))
    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60) * 0.3
    delay = int(rng.integers(int(0.002 * sample_rate), int(0.01 * sample_rate)))
    tail[:delay] = 0
    tail[0] = 1.0
    return tail.astype(np.float32)


# --------------------------------------------------------------------------------------------
# the augmenter used by the data pipeline
# --------------------------------------------------------------------------------------------


class _FileCache:
    """Decoded noise/RIR files at the training rate, least recently used ones dropped."""

    def __init__(self, loader: Callable[[str], np.ndarray], size: int = 64) -> None:
        self.loader = loader
        self.size = size
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, path: str) -> np.ndarray:
        if path in self.items:
            self.items.move_to_end(path)
            return self.items[path]
        audio = self.loader(path)
        self.items[path] = audio
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return audio


class Augmenter:
    """Turns a clean utterance into Track 2's ``(input, target)`` (see the module docstring).

    Args:
        cfg: the ``data`` section (probabilities, SNR range, early-reflection length, rooms).
        noise_paths: noise files (any rate; resampled on load). Empty: no noise.
        rir_paths: RIR files. Empty: simulated rooms when ``cfg.simulate_rooms``, else no reverb.
        sample_rate: training rate in Hz.
        seed: seeds the simulated-room pool (rooms are the same on every rank and after resume).
    """

    def __init__(self, cfg: DataConfig, noise_paths: Sequence[str] = (), rir_paths: Sequence[str] = (),
                 sample_rate: int = 24000, seed: int = 0) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.seed = seed
        self.noise_paths = list(noise_paths)
        self.rir_paths = list(rir_paths)
        self.failed: dict[str, str] = {}  # path -> reason, for files that could not be used
        self._noise = _FileCache(lambda p: load_audio(p, sample_rate, warn_stereo=False)[0])
        self._rirs = _FileCache(self._load_rir, size=512)
        self._rooms: dict[int, np.ndarray] = {}
        self._simulate = not self.rir_paths and cfg.simulate_rooms
        if self._simulate:
            try:
                import pyroomacoustics  # noqa: F401
            except ImportError:
                warnings.warn("pyroomacoustics is not installed (pip install 'lrac[rooms]'): "
                              "reverb uses synthetic exponentially decaying RIRs instead of simulated "
                              "rooms", stacklevel=2)
                self._room_fn = lambda rng: synthetic_rir(rng, sample_rate, cfg.rt60_s)
            else:
                self._room_fn = lambda rng: simulate_rir(rng, sample_rate, cfg.room_size_m, cfg.rt60_s)

    def _load_rir(self, path: str) -> np.ndarray:
        rir = load_audio(path, self.sample_rate, warn_stereo=False)[0]
        if not np.any(rir):
            raise AudioError(f"{path}: RIR is all zeros")
        return rir

    def _draw_rir(self, rng: np.random.Generator) -> np.ndarray | None:
        if self.rir_paths:
            return self._draw_file(self.rir_paths, self._rirs, rng)
        if not self._simulate:
            return None
        index = int(rng.integers(0, ROOM_POOL))
        if index not in self._rooms:
            self._rooms[index] = self._room_fn(np.random.default_rng([self.seed, index]))
        return self._rooms[index]

    def _draw_file(self, paths: list[str], cache: _FileCache, rng: np.random.Generator
                   ) -> np.ndarray | None:
        """A random usable file; unusable ones are remembered in ``failed`` and skipped."""
        for _ in range(8):
            path = paths[int(rng.integers(0, len(paths)))]
            if path in self.failed:
                continue
            try:
                return cache.get(path)
            except AudioError as exc:
                self.failed[path] = str(exc)
                warnings.warn(f"skipping augmentation file: {exc}", stacklevel=3)
        return None

    def __call__(self, speech: np.ndarray, rng: np.random.Generator) -> Augmented:
        """Augment one utterance ``[T]``; every random choice comes from ``rng``."""
        speech = np.asarray(speech, dtype=np.float32)
        # Draw both decisions first, so the draws do not depend on which files load.
        use_reverb = rng.random() < self.cfg.reverb_prob
        use_noise = rng.random() < self.cfg.noise_prob and bool(self.noise_paths)
        degraded, target, rir, snr = speech, speech, None, None
        if use_reverb:
            rir = self._draw_rir(rng)
            if rir is not None:
                degraded, target = reverberate(speech, rir, self.sample_rate, self.cfg.early_reflection_ms)
        if use_noise:
            noise = self._draw_file(self.noise_paths, self._noise, rng)
            if noise is not None:
                crop = fit_noise(noise, len(degraded), rng)
                snr = float(rng.uniform(float(self.cfg.snr_db[0]), float(self.cfg.snr_db[1])))
                degraded = degraded + noise_gain(degraded, crop, snr, self.sample_rate) * crop
        peak = float(np.max(np.abs(degraded))) if len(degraded) else 0.0
        scale = 1.0 / peak if peak > 1.0 else 1.0
        degraded = (degraded * scale).astype(np.float32)
        target = (target * scale).astype(np.float32)
        return Augmented(degraded, target, snr, rir, scale)


# --------------------------------------------------------------------------------------------
# per training chunk (torch, in the loop): drawn from torch's global generator, which
# checkpoints save, so a resumed run draws the same
# --------------------------------------------------------------------------------------------


def random_level(x: torch.Tensor, y: torch.Tensor, level_db: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target ``[B, 1, T]`` times the same gain per chunk, uniform in dB over ``level_db``
    (``[low, high]``; ``[0, 0]`` leaves them). A gain above 0 dB stops where the chunk's peak
    (input or target) reaches full scale: a louder talker, never a clipped one."""
    low, high = level_db
    if low == high == 0:
        return x, y
    gain = 10 ** ((low + (high - low) * torch.rand(x.shape[0], 1, 1)) / 20)
    if high > 0:
        peak = torch.maximum(x.abs().amax(-1, keepdim=True), y.abs().amax(-1, keepdim=True)).float()
        headroom = (1.0 / peak.clamp(min=1e-6)).clamp(min=1.0).cpu()
        gain = torch.where(gain > 1, torch.minimum(gain, headroom), gain)
    return x * gain.to(x), y * gain.to(y)


def check_level_range(level_db: list[float]) -> None:
    """Refuse a ``data.level_db`` that :func:`random_level` cannot use, naming the key."""
    if len(level_db) != 2 or not -60 <= level_db[0] <= level_db[1] <= 30:
        raise ValueError(f"data.level_db must be [low, high] dB with -60 <= low <= high <= 30, got {level_db}")

"""Objective speech-quality metrics on numpy arrays, one function per metric.

Every function takes mono float arrays ``[T]`` in [-1, 1] at ``rate`` Hz and resamples to the rate
its metric is defined at. Intrusive metrics need ``ref`` and ``deg`` time-aligned and of equal length
(:mod:`lrac.eval.score` aligns them). A metric that cannot be computed raises :class:`MetricError`
with a one-line reason; :func:`compute_metrics` turns that into NaN plus the reason.

Imports nothing of lrac but :mod:`lrac.audio` (resampling) and :mod:`lrac.mel`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..audio import resample
from ..mel import mel_filterbank

# Below this peak level (-80 dBFS) a signal counts as silence: PESQ and STOI are undefined on it.
SILENCE_PEAK = 1e-4
MEL_RATE = 24000
# (n_fft, n_mels) of the multi-resolution log-mel distance; hop = n_fft // 4.
MEL_RESOLUTIONS: tuple[tuple[int, int], ...] = ((256, 40), (512, 80), (1024, 128), (2048, 128))
MEL_FLOOR_DB = 80.0


class MetricError(ValueError):
    """A metric that is undefined for this input; the message says why (one line)."""


def is_silent(audio: np.ndarray) -> bool:
    """True when the peak of ``[T]`` audio is below -80 dBFS (or it has no samples)."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def _check_pair(ref: np.ndarray, deg: np.ndarray) -> None:
    if ref.shape != deg.shape:
        raise MetricError(f"reference and decoded lengths differ ({ref.shape[-1]} vs {deg.shape[-1]} "
                          "samples); align them first")
    if is_silent(ref):
        raise MetricError("reference is silent")


# --------------------------------------------------------------------------------------------
# PESQ, STOI
# --------------------------------------------------------------------------------------------


def _pesq(ref: np.ndarray, deg: np.ndarray, rate: int, mode: str, pesq_rate: int) -> float:
    from pesq import NoUtterancesError, PesqError, pesq

    _check_pair(ref, deg)
    if is_silent(deg):
        raise MetricError("decoded audio is silent (PESQ refuses silence)")
    r = resample(ref, rate, pesq_rate).astype(np.float64)
    d = resample(deg, rate, pesq_rate).astype(np.float64)
    try:
        return float(pesq(pesq_rate, r, d, mode))
    except NoUtterancesError:
        raise MetricError("PESQ found no speech (its level detector refuses near-silence)") from None
    except PesqError as exc:
        raise MetricError(f"PESQ refused the input ({type(exc).__name__})") from None


def pesq_wb(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """PESQ wide-band (ITU-T P.862.2) MOS-LQO in [1.04, 4.64], computed at 16 kHz.

    Args:
        ref, deg: aligned ``[T]`` float arrays at ``rate`` Hz.
    """
    return _pesq(ref, deg, rate, "wb", 16000)


def pesq_nb(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """PESQ narrow-band (ITU-T P.862 with the P.862.1 mapping) MOS-LQO in [1.0, 4.5], at 8 kHz."""
    return _pesq(ref, deg, rate, "nb", 8000)


def _stoi(ref: np.ndarray, deg: np.ndarray, rate: int, extended: bool) -> float:
    from pystoi import stoi as pystoi

    _check_pair(ref, deg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # pystoi resamples to its 10 kHz internal rate itself.
        value = float(pystoi(ref.astype(np.float64), deg.astype(np.float64), rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricError("too little speech for STOI (needs 30 frames of 25.6 ms above the VAD floor)")
    return value


def stoi(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Short-Time Objective Intelligibility in [0, 1] (``pystoi``, 10 kHz internally)."""
    return _stoi(ref, deg, rate, extended=False)


def estoi(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Extended STOI in [0, 1] (``pystoi`` with ``extended=True``)."""
    return _stoi(ref, deg, rate, extended=True)


# --------------------------------------------------------------------------------------------
# Signal-level and spectral distances
# --------------------------------------------------------------------------------------------


def si_sdr(ref: np.ndarray, deg: np.ndarray, rate: int | None = None, cap_db: float = 100.0) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (higher is better), capped at ``cap_db``.

    Both signals are made zero-mean; ``rate`` is unused (the metric is rate-free). The cap keeps
    a perfect copy at a finite value so means stay meaningful.
    """
    _check_pair(ref, deg)
    r = ref.astype(np.float64) - ref.mean()
    d = deg.astype(np.float64) - deg.mean()
    if not np.any(d):
        raise MetricError("decoded audio is all zeros (SI-SDR is 0/0)")
    scale = np.dot(d, r) / np.dot(r, r)
    target = scale * r
    noise = d - target
    num, den = float(np.dot(target, target)), float(np.dot(noise, noise))
    if den <= num * 10 ** (-cap_db / 10):
        return cap_db
    if num == 0.0:  # decoded audio orthogonal to the reference
        return -cap_db
    return max(-cap_db, 10 * math.log10(num / den))


def _power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``[frames, n_fft // 2 + 1]`` power of a centred, Hann-windowed STFT."""
    x = np.pad(audio.astype(np.float64), (n_fft // 2, n_fft // 2), mode="constant")
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)) ** 2


_FILTERBANKS: dict[tuple[int, int, int], np.ndarray] = {}


def mel_distance(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Multi-resolution log-mel distance in dB at 24 kHz (lower is better; 0 for a copy).

    For each ``(n_fft, n_mels)`` in :data:`MEL_RESOLUTIONS` (hop ``n_fft // 4``, 0-12 kHz), the mean
    absolute difference of the two log-mel power spectra in dB, with both floored at 80 dB below the
    reference's peak so that silence does not dominate; then the mean over resolutions.
    """
    _check_pair(ref, deg)
    r, d = resample(ref, rate, MEL_RATE), resample(deg, rate, MEL_RATE)
    distances = []
    for n_fft, n_mels in MEL_RESOLUTIONS:
        key = (MEL_RATE, n_fft, n_mels)
        if key not in _FILTERBANKS:
            _FILTERBANKS[key] = mel_filterbank(MEL_RATE, n_fft, n_mels, scale="htk")
        fb = _FILTERBANKS[key]
        mr = 10 * np.log10(_power_spectrogram(r, n_fft, n_fft // 4) @ fb.T + 1e-20)
        md = 10 * np.log10(_power_spectrogram(d, n_fft, n_fft // 4) @ fb.T + 1e-20)
        floor = mr.max() - MEL_FLOOR_DB
        distances.append(float(np.mean(np.abs(np.maximum(mr, floor) - np.maximum(md, floor)))))
    return float(np.mean(distances))


def log_spectral_distance(ref: np.ndarray, deg: np.ndarray, rate: int, n_fft: int = 2048,
                          hop: int = 512) -> float:
    """Log-spectral distance (lower is better): mean over frames of
    ``sqrt(mean_f (log10 P_ref - log10 P_deg)^2)`` on the STFT power at the input rate.

    This is the definition used in speech bandwidth-extension papers (log10 of power, no dB
    factor); typical codec values are 0.5-2.
    """
    _check_pair(ref, deg)
    pr = np.log10(_power_spectrogram(ref, n_fft, hop) + 1e-8)
    pd = np.log10(_power_spectrogram(deg, n_fft, hop) + 1e-8)
    return float(np.mean(np.sqrt(np.mean((pr - pd) ** 2, axis=-1))))


# --------------------------------------------------------------------------------------------
# No-reference MOS (DNSMOS) and ViSQOL, both optional and fully offline
# --------------------------------------------------------------------------------------------

_MODELS: dict[str, object] = {}


def _ort_session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per session: lrac-score parallelises over files with --jobs instead.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _dnsmos_model():
    if "dnsmos" not in _MODELS:
        if importlib.util.find_spec("speechmos") is None:
            raise MetricError("DNSMOS needs the speechmos package (pip install 'lrac[mos]')")
        from speechmos import dnsmos as sm

        class _Dnsmos(sm.DNSMOS):
            """speechmos's DNSMOS with single-threaded ONNX sessions (its models ship in the wheel)."""

            def __init__(self, folder: str) -> None:
                self.primary_model_path = os.path.join(folder, "sig_bak_ovr.onnx")
                self.onnx_sess = _ort_session(self.primary_model_path)
                self.p808_onnx_sess = _ort_session(os.path.join(folder, "model_v8.onnx"))

        _MODELS["dnsmos"] = _Dnsmos(os.path.join(os.path.dirname(sm.__file__), "dnsmos_models"))
    return _MODELS["dnsmos"]


def dnsmos(deg: np.ndarray, rate: int) -> dict[str, float]:
    """DNSMOS P.835 (``sig``, ``bak``, ``ovrl``) and P.808 MOS, no reference needed, at 16 kHz.

    Uses the ONNX models shipped inside the ``speechmos`` wheel (no download). Clips shorter than
    the model's 9 s window are looped by speechmos. Returns keys ``dnsmos_sig``, ``dnsmos_bak``,
    ``dnsmos_ovrl``, ``dnsmos_p808`` (MOS, 1-5, higher is better).
    """
    if is_silent(deg):
        raise MetricError("decoded audio is silent")
    x = np.clip(resample(deg, rate, 16000), -1.0, 1.0).astype(np.float32)
    out = _dnsmos_model()(x, 16000, False)
    return {"dnsmos_sig": float(out["sig_mos"]), "dnsmos_bak": float(out["bak_mos"]),
            "dnsmos_ovrl": float(out["ovrl_mos"]), "dnsmos_p808": float(out["p808_mos"])}


def _plcmos_model():
    if "plcmos" not in _MODELS:
        if importlib.util.find_spec("speechmos") is None:
            raise MetricError("PLCMOS needs the speechmos package (pip install 'lrac[mos]')")
        from speechmos import plcmos as sm

        class _Plcmos(sm.PLCMOS):
            """speechmos's PLCMOS v2 with a single-threaded ONNX session (its model ships in the wheel)."""

            def __init__(self) -> None:   # (the parent's would open a multi-threaded session)
                self.model_name, self.max_lens, self.embed_rounds = "plcmos_v2", 999999999999, 15
                self.model_path = os.path.join(os.path.dirname(sm.__file__), "plcmos_models", "plcmos_v2.onnx")
                self.session = _ort_session(self.model_path)

        _MODELS["plcmos"] = _Plcmos()
    return _MODELS["plcmos"]


def plcmos(deg: np.ndarray, rate: int) -> float:
    """PLCMOS v2 (Microsoft's packet-loss-concealment MOS, INTERSPEECH 2023; 1-5, higher is better),
    no reference needed, at 16 kHz, from the ONNX model inside the ``speechmos`` wheel.

    The model averages 15 draws of a random "rater"; they are drawn with a fixed seed here (numpy's
    global generator is restored afterwards), so that the same audio always gets the same score."""
    if is_silent(deg):
        raise MetricError("decoded audio is silent")
    x = np.clip(resample(deg, rate, 16000), -1.0, 1.0).astype(np.float32)
    saved = np.random.get_state()
    np.random.seed(0)
    try:
        return float(_plcmos_model()(x)["plcmos"])
    finally:
        np.random.set_state(saved)


def visqol(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """ViSQOL v3 speech mode MOS-LQO (1-5, higher is better) at 16 kHz, full reference.

    Needs ``visqol-python[lattice]``, which ships its lattice model (no download).
    """
    _check_pair(ref, deg)
    if importlib.util.find_spec("visqol") is None:
        raise MetricError("ViSQOL needs visqol-python[lattice] (pip install 'lrac[mos]')")
    if "visqol" not in _MODELS:
        import logging

        from visqol.api import VisqolApi

        logging.getLogger("visqol").setLevel(logging.ERROR)
        api = VisqolApi()
        api.create(mode="speech")
        _MODELS["visqol"] = api
    r = resample(ref, rate, 16000).astype(np.float64)
    d = resample(deg, rate, 16000).astype(np.float64)
    return float(_MODELS["visqol"].measure_from_arrays(r, d, 16000).moslqo)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One metric (or metric family) that :func:`compute_metrics` can run."""

    name: str
    columns: tuple[str, ...]
    fn: Callable[..., float | dict[str, float]]
    higher_is_better: bool
    unit: str
    reference: bool = True
    package: str = ""  # optional package it needs; empty for always available

    def available(self) -> bool:
        return not self.package or importlib.util.find_spec(self.package) is not None


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("pesq_wb", ("pesq_wb",), pesq_wb, True, "MOS-LQO"),
    MetricSpec("pesq_nb", ("pesq_nb",), pesq_nb, True, "MOS-LQO"),
    MetricSpec("stoi", ("stoi",), stoi, True, "0-1"),
    MetricSpec("estoi", ("estoi",), estoi, True, "0-1"),
    MetricSpec("si_sdr", ("si_sdr",), si_sdr, True, "dB"),
    MetricSpec("mel_distance", ("mel_distance",), mel_distance, False, "dB"),
    MetricSpec("lsd", ("lsd",), log_spectral_distance, False, "log10 power"),
    MetricSpec("dnsmos", ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"), dnsmos, True,
               "MOS", reference=False, package="speechmos"),
    MetricSpec("visqol", ("visqol",), visqol, True, "MOS-LQO", package="visqol"),
    MetricSpec("plcmos", ("plcmos",), plcmos, True, "MOS", reference=False, package="speechmos"),
)}
# Optional metrics join the default set only when their package is installed.
DEFAULT_METRICS: tuple[str, ...] = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "mel_distance",
                                    "lsd", "dnsmos", "visqol")


def column_spec(column: str) -> MetricSpec:
    """The spec that produces CSV column ``column`` (e.g. ``dnsmos_ovrl`` -> dnsmos)."""
    for spec in METRICS.values():
        if column in spec.columns:
            return spec
    raise KeyError(column)


def resolve_metrics(names: list[str] | tuple[str, ...] | None = None) -> list[MetricSpec]:
    """Specs for ``names`` (default: :data:`DEFAULT_METRICS` whose packages are installed).

    Raises ValueError for an unknown name, listing the known ones.
    """
    if names is None:
        return [METRICS[n] for n in DEFAULT_METRICS if METRICS[n].available()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return [METRICS[n] for n in names]


def compute_metrics(ref: np.ndarray, deg: np.ndarray, rate: int, specs: list[MetricSpec]
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """Run every metric on aligned, equal-length ``[T]`` arrays at ``rate`` Hz.

    Never raises for a metric's failure: its columns become NaN and the reason is returned.

    Returns:
        ``(values, reasons)``: column -> value (NaN when undefined) and column -> one-line reason.
    """
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for spec in specs:
        try:
            if not spec.available():
                raise MetricError(f"package {spec.package!r} is not installed")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = spec.fn(ref, deg, rate) if spec.reference else spec.fn(deg, rate)
            values.update(out if isinstance(out, dict) else {spec.columns[0]: float(out)})
        except Exception as exc:  # one metric failing must not lose the others
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not isinstance(exc, MetricError):
                reason = f"{type(exc).__name__}: {reason}"
            for col in spec.columns:
                values[col] = math.nan
                reasons[col] = reason
    return values, reasons

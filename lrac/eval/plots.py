"""Optional pictures of a scoring run (needs matplotlib: ``pip install 'lrac[plots]'``).

* one PNG per utterance: the reference spectrogram above the decoded one at each bitrate/system;
* one summary chart: each metric's mean with its 95% interval, one bar per bitrate/system.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import AudioError, load_audio, resample
from .score import ScoreResult, align

DYNAMIC_RANGE_DB = 80.0


def require_matplotlib() -> None:
    """Raise ImportError with the install hint when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("plots need matplotlib: pip install 'lrac[plots]'")


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def spectrogram_db(audio: np.ndarray, rate: int, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """``[n_fft // 2 + 1, frames]`` Hann STFT power in dB (0 dB = 1.0 full-scale sine power)."""
    x = np.pad(audio.astype(np.float64), (0, max(0, n_fft - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2 / (window.sum() ** 2 / 4)
    return 10 * np.log10(power.T + 1e-12)


def plot_spectrograms(ref: np.ndarray, decoded: dict[str, np.ndarray], rate: int, path: str | Path,
                      title: str = "", scores: dict[str, str] | None = None) -> Path:
    """Save the reference and each decoded ``[T]`` signal (all at ``rate`` Hz) as stacked spectrograms.

    ``scores`` adds a caption per decoded label (e.g. ``"PESQ-WB 2.91"``)."""
    plt = _pyplot()
    rows = [("reference", ref), *decoded.items()]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.2 * len(rows)), sharex=True, squeeze=False)
    top = spectrogram_db(ref, rate).max()
    image = None
    for ax, (label, audio) in zip(axes[:, 0], rows):
        spec = spectrogram_db(audio, rate)
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - DYNAMIC_RANGE_DB,
                          vmax=top, extent=(0, len(audio) / rate, 0, rate / 2000))
        caption = label + (f"   {scores[label]}" if scores and label in scores else "")
        ax.set_title(caption, fontsize=9, loc="left")
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("seconds")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_utterances(results: dict[str, ScoreResult], out_dir: str | Path,
                    caption_metric: str = "pesq_wb") -> list[Path]:
    """One PNG per scored utterance, ``out_dir/<utt>.png``, with every system of ``results``
    (label -> result) delay-aligned to the reference. Unreadable files are left out."""
    by_utt: dict[str, dict[str, dict[str, Any]]] = {}
    for label, result in results.items():
        for row in result.scored:
            by_utt.setdefault(row["utt"], {})[label] = row
    written = []
    for utt, rows in sorted(by_utt.items()):
        first = next(iter(rows.values()))
        try:
            ref, rate = load_audio(first["ref"], warn_stereo=False)
            decoded, scores = {}, {}
            for label, row in rows.items():
                deg, deg_rate = load_audio(row["deg"], warn_stereo=False)
                lag = int(round(row["delay_ms"] * rate / 1000))
                _, decoded[label] = align(ref, resample(deg, deg_rate, rate), lag)
                value = row.get(caption_metric)
                if isinstance(value, float) and np.isfinite(value):
                    scores[label] = f"{caption_metric} {value:.2f}"
        except AudioError:
            continue
        written.append(plot_spectrograms(ref, decoded, rate, Path(out_dir) / f"{utt}.png", utt, scores))
    return written


def plot_summary(results: dict[str, ScoreResult], path: str | Path, columns: list[str] | None = None
                 ) -> Path:
    """A bar chart per metric: mean ± 95% CI of every system/bitrate in ``results``."""
    plt = _pyplot()
    labels = list(results)
    columns = columns or [c for c in next(iter(results.values())).columns]
    n_cols = min(4, len(columns))
    n_rows = -(-len(columns) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.6 * n_rows), squeeze=False)
    for ax, col in zip(axes.flat, columns):
        means = [results[lb].summary.get(col, {}).get("mean") for lb in labels]
        cis = [results[lb].summary.get(col, {}).get("ci95") for lb in labels]
        ax.bar(range(len(labels)), [np.nan if m is None else m for m in means],
               yerr=[0 if c is None else c for c in cis], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(col, fontsize=9)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

"""Where a codec loses intelligibility: STOI's band-wise envelope correlations, band by band.

STOI and ESTOI compare the envelopes of 15 third-octave bands (150 Hz to 4.3 kHz) over 384 ms
segments. This prints, for each band, the mean correlation between the reference's envelope and the
coded clip's (STOI's intermediate measure, before clipping) and the mean level difference in dB,
over the clips of a list. A codec can lose ESTOI in a few bands only: lrac t1 version 12 was ahead
of Opus above 750 Hz and far behind below 500 Hz, which led to the harmonic source's lag (fixed in
version 13; docs/results.md, "Bounds").

    python benchmarks/bands.py t1 --list exp/lists/valid-read.scp --opus
    python benchmarks/bands.py exp/t1-v12.pt t1 --list exp/lists/valid77.scp --bitrates 1000 6000

Models are as in ``benchmarks/compare.py`` (a file or pretrained name, optionally ``@key=value``
settings). ``--opus`` adds Opus at 6 kbps (``opusenc``/``opusdec``, as in ``benchmarks/anchors.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from pystoi import utils
from scipy.signal import resample_poly

from anchors import opus                 # benchmarks/anchors.py
from compare import code, load_model     # benchmarks/compare.py
from lrac.audio import AudioError, load_audio, write_audio
from lrac.cli.common import user_errors
from lrac.lists import read_scp
from lrac.eval.score import align, estimate_delay

# STOI's analysis (pystoi): 10 kHz, 256-sample frames, 15 third-octave bands from 150 Hz,
# 30-frame (384 ms) segments, frames more than 40 dB below the loudest dropped
STOI_RATE, FRAME, NFFT, BANDS, MIN_HZ, SEGMENT, DYN_RANGE = 10000, 256, 512, 15, 150, 30, 40
OCTAVE_BANDS, CENTRES_HZ = utils.thirdoct(STOI_RATE, NFFT, BANDS, MIN_HZ)


def _envelopes(x: np.ndarray) -> np.ndarray:
    """``[T]`` at STOI's rate -> third-octave band magnitudes ``[BANDS, frames]``."""
    return np.sqrt(OCTAVE_BANDS @ np.abs(utils.stft(x, FRAME, NFFT, overlap=2).T) ** 2)


def band_scores(ref: np.ndarray, deg: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(correlation [BANDS], level difference dB [BANDS])`` of two aligned ``[T]`` signals at
    ``rate``: each band's mean over STOI's 384 ms segments."""
    n = min(len(ref), len(deg))
    x, y = (resample_poly(a[:n].astype(np.float64), STOI_RATE, rate) for a in (ref, deg))
    x, y = utils.remove_silent_frames(x, y, DYN_RANGE, FRAME, FRAME // 2)
    spec_x, spec_y = _envelopes(x), _envelopes(y)
    corr, level = np.zeros(BANDS), np.zeros(BANDS)
    segments = range(SEGMENT, spec_x.shape[1] + 1)
    for end in segments:
        xs, ys = spec_x[:, end - SEGMENT:end], spec_y[:, end - SEGMENT:end]
        xc, yc = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
        corr += (xc * yc).sum(1) / (np.linalg.norm(xc, axis=1) * np.linalg.norm(yc, axis=1) + 1e-12)
        level += 20 * np.log10((ys.mean(1) + 1e-9) / (xs.mean(1) + 1e-9))
    count = max(len(segments), 1)
    return corr / count, level / count


def opus_6k(clip: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(reference, decoded)``: the clip through Opus at 6 kbps, both cropped to the delay the
    scorer finds (Opus's decoder delay is not removed by ``opusdec``)."""
    anchor = opus(6)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_audio(work / "in.wav", resample_poly(clip, anchor.rate, rate) if rate != anchor.rate else clip,
                    anchor.rate)
        decoded, out_rate, _ = anchor.run(work / "in.wav", work)
    if out_rate != rate:
        decoded = resample_poly(decoded, rate, out_rate)
    return align(clip, decoded, estimate_delay(clip, decoded, rate)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model files or pretrained names, [@key=value...]")
    parser.add_argument("--list", required=True, help="wav.scp-style list of clips (id path)")
    parser.add_argument("--bitrates", type=int, nargs="+", default=[6000])
    parser.add_argument("--opus", action="store_true", help="add Opus at 6 kbps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        clips = read_scp(args.list)
    except AudioError as exc:
        parser.error(str(exc))
    if args.opus and opus(6).missing:
        parser.error(f"--opus: {opus(6).missing}")
    systems: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    codecs = [(spec, load_model(spec)) for spec in args.models]
    rate = codecs[0][1].sample_rate if codecs else 24000   # lrac's rate (Opus is fed at 24 kHz too)
    for i, (_, path) in enumerate(clips):
        clip, _ = load_audio(path, rate, warn_stereo=False)
        for spec, codec in codecs:
            for bitrate in args.bitrates:
                decoded = code(codec, clip, bitrate, 0.0)
                systems.setdefault(f"{spec} {bitrate / 1000:g} kbps", []).append(band_scores(clip, decoded, rate))
        if args.opus:
            systems.setdefault("Opus 6 kbps", []).append(band_scores(*opus_6k(clip, rate), rate))
        print(f"\r{i + 1}/{len(clips)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    bands = "| system | " + " | ".join(f"{c:.0f}" for c in CENTRES_HZ) + " |"
    print(f"{len(clips)} clips of {args.list}: envelope correlation per third-octave band (Hz)\n")
    print(bands + " mean |\n|" + "---|" * (BANDS + 2))
    for name, scores in systems.items():
        corr = np.mean([c for c, _ in scores], axis=0)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in corr) + f" | {corr.mean():.3f} |")
    print("\nlevel difference per band (dB, coded - reference)\n")
    print(bands + "\n|" + "---|" * (BANDS + 1))
    for name, scores in systems.items():
        level = np.mean([lv for _, lv in scores], axis=0)
        print(f"| {name} | " + " | ".join(f"{v:+.1f}" for v in level) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

"""The pitch tracker's voicing and pitch against pYIN, an offline HMM-smoothed tracker (docs/frame_family.md,
"Voicing"). Needs librosa (`pip install librosa`; not a dependency of lrac).

    python benchmarks/voicing.py exp/lists/valid13.scp
    python benchmarks/voicing.py LIST --rule=-50:0 --rule=-70:0.35     # FLOOR_DB:HOLD (0: no hold)
    python benchmarks/voicing.py LIST --rule=-70:0.35:6.67:0.4          # ...:ONSET_MS:ONSET_DIP

For each rule: misses (pYIN voiced, the tracker not) and false alarms, as shares of all frames, and
gross pitch errors (more than 20 % off) among the frames both call voiced. pYIN's frame ``k`` is
50 ms centred on ``k * hop``; the tracker's compares the 13.3 ms before ``(k + 1) * hop``, about the
same instant (pairing them one frame apart changes the figures by less than 0.2 points).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from lrac.audio import load_audio
from lrac.cli.common import user_errors
from lrac.lists import read_scp
from lrac.models.pitch import PitchTracker

RATE, HOP = 24000, 240


def pyin(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import librosa
    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=RATE, frame_length=1200,
                                 hop_length=HOP, center=True)
    return np.nan_to_num(f0), voiced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("list", help="Kaldi-style <id> <path> list")
    ap.add_argument("--rule", action="append", default=[],
                    help="FLOOR_DB:HOLD[:ONSET_MS:ONSET_DIP], e.g. --rule=-70:0.35 (HOLD, ONSET_MS 0: off)")
    ap.add_argument("--seconds", type=float, default=10.0, help="cut each clip to this length")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rules = [tuple(float(v) for v in r.split(":")) + (0.0, 0.3)
             for r in args.rule or ["-50:0", "-70:0", "-70:0.35", "-70:0.35:6.67:0.4"]]
    clips = [load_audio(path, RATE)[0][: int(args.seconds * RATE)] for _, path in read_scp(args.list)]
    refs = [pyin(x) for x in clips]
    print(f"{len(clips)} clips, {sum(len(r[0]) for r in refs)} frames; pYIN voiced "
          f"{np.mean(np.concatenate([r[1] for r in refs])):.1%}\n")
    print("| floor dB | hold | onset window | misses | false alarms | gross pitch errors |\n"
          "|---|---|---|---|---|---|")
    for floor_db, hold, onset_ms, onset_dip in (r[:4] for r in rules):
        tracker = PitchTracker(RATE, HOP, floor_db, hold or None, round(onset_ms * RATE / 1000), onset_dip)
        frames = miss = false = both = gross = 0
        for x, (ref_f0, ref_voiced) in zip(clips, refs):
            with torch.no_grad():
                f0, _, voiced = tracker(torch.from_numpy(x).double()[None, None])
            n = min(f0.shape[-1], len(ref_f0))
            f0, voiced, ref_f0, ref_voiced = f0[0, :n].numpy(), voiced[0, :n].numpy(), ref_f0[:n], ref_voiced[:n]
            common = voiced & ref_voiced
            frames += n
            miss += int((ref_voiced & ~voiced).sum())
            false += int((voiced & ~ref_voiced).sum())
            both += int(common.sum())
            gross += int((np.abs(np.log2(f0[common] / ref_f0[common])) > np.log2(1.2)).sum())
        onset = f"{onset_ms:g} ms, dip < {onset_dip:g}" if onset_ms else "-"
        print(f"| {floor_db:g} | {hold or '-'} | {onset} | {miss / frames:.1%} | {false / frames:.1%} | "
              f"{gross / max(both, 1):.1%} |")


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

"""PESQ-WB (and STOI) of a trained checkpoint against the untrained model, on held-out clips.

The clips are ``RUN/dump/valid/wav.scp`` (the validation speakers, formatted by ``lrac-train`` stage 2-3)
or ``--clips LIST``. For Track 2 the inputs are augmented with ``--noise``/``--rir`` (seeded, the
same for every model) and the reference is the clean early-reflection target. The untrained model is
the trainer's initial state (``torch.manual_seed(train.seed)``, codebooks not yet initialised).
Each trained model's PESQ-WB is also compared with the untrained model's clip by clip: clips
better, mean gain, and the two-sided Wilcoxon signed-rank p-value.

    python benchmarks/train_quality.py --track 1 --run runs/t1 [--max 75] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from lrac import Codec
from lrac.audio import load_audio
from lrac.cli.common import user_errors
from lrac.eval.metrics import MetricError, pesq_wb, stoi
from lrac.train.augment import Augmenter
from lrac.train.data import load_prepared, load_source, read_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", type=int, choices=[1, 2], required=True)
    parser.add_argument("--run", type=Path, required=True, help="lrac-train --out folder")
    parser.add_argument("--models", nargs="+", default=["best", "last"], help="checkpoints in RUN")
    parser.add_argument("--clips", default=None, help="held-out speech (default RUN/dump/valid)")
    parser.add_argument("--noise", default=None)
    parser.add_argument("--rir", default=None)
    parser.add_argument("--max", type=int, default=75)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    trained = Codec.load(args.run / f"{args.models[0]}.pt")
    torch.manual_seed(trained.config.train.seed)
    models = {"untrained": Codec(trained.config)}
    models.update({name: Codec.load(args.run / f"{name}.pt") for name in args.models})
    clips = (load_source(args.clips) if args.clips else load_prepared(args.run / "dump" / "valid"))[: args.max]
    augment = None
    if args.track == 2:
        noise = [u.path for u in read_list(args.noise)] if args.noise else []
        rir = [u.path for u in read_list(args.rir)] if args.rir else []
        augment = Augmenter(trained.config.data, noise, rir, trained.sample_rate, seed=1)

    scores: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for i, clip in enumerate(clips):
        clean, rate = load_audio(clip.path, trained.sample_rate, warn_stereo=False)
        if augment:
            out = augment(clean, np.random.default_rng([99, i]))
            x, ref = out.input, out.target
            scores.setdefault("input", {}).setdefault("-", []).append((pesq_wb(ref, x, rate), stoi(ref, x, rate)))
        else:
            x, ref = clean, clean
        for name, codec in models.items():
            for bitrate in codec.bitrates_bps:
                y = codec.decode(codec.encode(x, bitrate), length=len(x))[0, 0].numpy()
                try:
                    row = (pesq_wb(ref, y, rate), stoi(ref, y, rate))
                except MetricError:
                    row = (float("nan"), float("nan"))
                scores.setdefault(name, {}).setdefault(f"{bitrate // 1000}kbps", []).append(row)
    table = {name: {br: {"pesq_wb": round(float(np.nanmean([r[0] for r in rows])), 3),
                         "stoi": round(float(np.nanmean([r[1] for r in rows])), 3)}
                    for br, rows in by_rate.items()} for name, by_rate in scores.items()}
    table["n_clips"] = len(clips)
    print(f"{'model':<10} {'bitrate':<8} {'PESQ-WB':>8} {'STOI':>6}   ({len(clips)} held-out clips)")
    for name, by_rate in table.items():
        if isinstance(by_rate, dict):
            for br, s in by_rate.items():
                print(f"{name:<10} {br:<8} {s['pesq_wb']:8.3f} {s['stoi']:6.3f}")
    for name in args.models:
        for br, rows in scores[name].items():
            gain = np.array([r[0] for r in rows]) - np.array([r[0] for r in scores["untrained"][br]])
            gain = gain[np.isfinite(gain)]
            p_value = float(wilcoxon(gain).pvalue) if np.any(gain) else 1.0
            table[name][br]["vs_untrained"] = {"pesq_wb_gain": round(float(gain.mean()), 3),
                                               "clips_better": int((gain > 0).sum()), "p": p_value}
            print(f"{name} {br}: PESQ-WB {gain.mean():+.3f} over untrained, better on "
                  f"{(gain > 0).sum()} of {len(gain)} clips, Wilcoxon p = {p_value:.2g}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

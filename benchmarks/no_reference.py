"""No-reference quality estimates (DNSMOS P.835 / P.808, PLCMOS) of two models, paired clip by clip.

PESQ-WB and ESTOI compare with the reference; these estimate how the output sounds without one, so
they catch what a waveform-closer output may add (buzz, roughness). Each model codes each clip at
each bitrate; the second model's mean difference to the first and the Wilcoxon p-value are printed.

    python benchmarks/no_reference.py OLD.pt NEW.pt [--list exp/lists/test.speech.scp] [--every 4] [--n 40]

Needs the ``mos`` extra (speechmos). One thread; about 8 CPU seconds per clip and model.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.stats import wilcoxon

from lrac.audio import load_audio
from lrac.cli.common import load_codec, user_errors
from lrac.eval.metrics import dnsmos, plcmos
from lrac.lists import read_scp

SR = 24000


def estimates(audio: np.ndarray) -> dict[str, float]:
    return {**dnsmos(audio, SR), "plcmos": plcmos(audio, SR)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs=2, help="reference model, then the model to compare (files or names)")
    parser.add_argument("--list", default="exp/lists/test.speech.scp")
    parser.add_argument("--every", type=int, default=4, help="every N-th clip of the list")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--bitrates", type=int, nargs="+", default=[1000, 6000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    codecs = [load_codec(m) for m in args.models]
    paths = [p for _, p in read_scp(args.list)][::args.every][:args.n]
    scores: dict[str, list[dict[str, float]]] = {}
    for i, path in enumerate(paths, 1):
        audio = load_audio(path, SR, warn_stereo=False)[0][:int(args.max_seconds * SR)].astype(np.float32)
        scores.setdefault("input", []).append(estimates(audio))
        for name, codec in zip(args.models, codecs):
            for bitrate in args.bitrates:
                out = codec.decode(codec.encode(torch.from_numpy(audio)[None, None], bitrate))[0, 0].numpy()
                scores.setdefault(f"{name} {bitrate}", []).append(estimates(out[:len(audio)]))
        print(f"{i}/{len(paths)}", flush=True)
    keys = list(scores["input"][0])
    print(f"\n| {len(paths)} clips | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for row, values in scores.items():
        print(f"| {row} | " + " | ".join(f"{np.mean([v[k] for v in values]):.3f}" for k in keys) + " |")
    for bitrate in args.bitrates:
        old, new = scores[f"{args.models[0]} {bitrate}"], scores[f"{args.models[1]} {bitrate}"]
        print(f"| difference at {bitrate} bit/s | " + " | ".join(
            f"{np.mean([b[k] - a[k] for a, b in zip(old, new)]):+.3f} (p = {wilcoxon([a[k] for a in old], [b[k] for b in new]).pvalue:.1g})"
            for k in keys) + " |")


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

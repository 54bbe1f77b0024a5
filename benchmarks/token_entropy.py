"""How many of a bitrate's bits a static entropy code of its tokens would need.

Each token row (10-bit symbols) gets its symbols' frequencies counted on training clips (add-half
smoothing over all 1,024 symbols); the cross-entropy of the validation clips' tokens under those
counts is what an arithmetic coder with those fixed tables would spend, per row and per frame,
against the 10 bits a row costs now. A variable-rate stream could give the difference to other
codes; a fixed-rate frame cannot (docs/results.md, "Bounds").

    python benchmarks/token_entropy.py --train exp/lists/train.speech.scp --n-train 300 \
        --list exp/lists/valid25.scp
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch

from lrac import Codec
from lrac.audio import load_audio
from lrac.cli.common import load_codec, user_errors
from lrac.lists import read_scp


def tokens_of(codec: Codec, paths: list[str], bitrate_bps: int, seconds: float) -> list[np.ndarray]:
    """Each clip's tokens ``[rows, frames]`` at ``bitrate_bps`` (clips cut to ``seconds``)."""
    out = []
    for path in paths:
        audio, _ = load_audio(path, codec.sample_rate, warn_stereo=False)
        audio = audio[: int(seconds * codec.sample_rate)]
        out.append(codec.encode(audio, bitrate_bps=bitrate_bps)[0].numpy())
    return out


def cross_entropy_bits(train: list[np.ndarray], test: list[np.ndarray], symbols: int) -> np.ndarray:
    """Per row, the mean bits a symbol of ``test`` costs under ``train``'s smoothed frequencies."""
    rows = train[0].shape[0]
    bits = np.zeros(rows)
    for r in range(rows):
        counts = np.bincount(np.concatenate([t[r] for t in train]), minlength=symbols) + 0.5
        p = counts / counts.sum()
        bits[r] = -np.log2(p[np.concatenate([t[r] for t in test])]).mean()
    return bits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="t1")
    parser.add_argument("--train", default="exp/lists/train.speech.scp")
    parser.add_argument("--n-train", type=int, default=300, help="training clips, drawn with seed 0")
    parser.add_argument("--list", default="exp/lists/valid25.scp")
    parser.add_argument("--bitrate", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    train_paths = [p for _, p in read_scp(args.train)]
    random.Random(0).shuffle(train_paths)
    train = tokens_of(codec, train_paths[: args.n_train], args.bitrate, args.seconds)
    test = tokens_of(codec, [p for _, p in read_scp(args.list)], args.bitrate, args.seconds)
    symbols = 1 << codec.bits_per_index
    bits = cross_entropy_bits(train, test, symbols)
    print(f"{args.model} at {args.bitrate} bit/s: {len(train)} training clips, "
          f"{sum(t.shape[1] for t in test)} frames of {args.list}")
    for r, b in enumerate(bits):
        print(f"row {r}: {b:.2f} of {codec.bits_per_index} bits")
    print(f"a frame: {bits.sum():.1f} of {len(bits) * codec.bits_per_index} bits")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

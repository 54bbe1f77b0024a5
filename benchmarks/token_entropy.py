"""How many of a bitrate's bits a static entropy code of its tokens would need.

Each sub-code row of the token layout (lrac/tokens.py: the latent's stages, the pitch, the low band)
gets its symbols' frequencies counted on training clips, and the cross-entropy of the validation
clips' symbols under those counts is what an arithmetic coder with those fixed tables would spend,
against the bits the row has now. Two codes:

* **marginal**: one table per row (add-half smoothing over all its symbols);
* **context**: the same, given the frames before it in the same packet, so that every packet still
  decodes alone: a latent row's FSQ digits each given the same digit one frame back, any other row
  given the top (at most 4) bits of its symbols one and two frames back (the pitch's first row
  spreads one code over two frames). Before a packet's first frame there is no context.

For packets of ``--packet-frames`` frames it also reports how often a packet's context code
exceeds the packet's fixed budget (the rate's bits for those frames) and the bits left over on
average, and, for a model with a low-band code, the bits a packet's frames with a low-band code
would have for it once every other sub-code is context-coded: what a variable layout could give
the low band at the same rate (docs/results.md, "Bounds").

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
from lrac.quant.fsq import grid_with_bits
from lrac.tokens import LATENT

CONTEXT_TOP_BITS = 4   # of each earlier symbol of a non-latent row


def symbols_of(codec: Codec, paths: list[str], bitrate_bps: int, seconds: float
               ) -> list[dict[str, np.ndarray]]:
    """Each clip's sub-code symbols (name -> ``[rows, frames]``) at ``bitrate_bps``, clips cut to ``seconds``."""
    out = []
    for path in paths:
        audio, _ = load_audio(path, codec.sample_rate, warn_stereo=False)
        tokens = codec.encode(audio[: int(seconds * codec.sample_rate)], bitrate_bps=bitrate_bps)
        out.append({k: v[0].numpy() for k, v in codec.layout.unpack(tokens).items()})
    return out


def earlier(x: np.ndarray, lag: int, packet_frames: int, none: int) -> np.ndarray:
    """``x`` [F] shifted ``lag`` frames later, ``none`` where that frame is in an earlier packet."""
    out = np.full_like(x, none)
    out[lag:] = x[:-lag]
    if packet_frames:
        out[np.arange(len(x)) % packet_frames < lag] = none
    return out


def streams(symbols: np.ndarray, name: str, bits: int, levels: list[int], packet_frames: int
            ) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """One row's symbols [F] as the (values, contexts, n_values, n_contexts) streams its context code
    spends bits on: one per FSQ digit for the latent, the whole symbol for the others."""
    if name == LATENT:
        grid = grid_with_bits(levels, bits)
        radix = np.cumprod([1] + grid[:-1])
        digits = [(symbols // r) % n for r, n in zip(radix, grid)]
        return [(d, earlier(d, 1, packet_frames, n), n, n + 1) for d, n in zip(digits, grid)]
    top = min(bits, CONTEXT_TOP_BITS)
    n_top = 1 << top
    context = (earlier(symbols >> (bits - top), 1, packet_frames, n_top) * (n_top + 1)
               + earlier(symbols >> (bits - top), 2, packet_frames, n_top))
    return [(symbols, context, 1 << bits, (n_top + 1) ** 2)]


def context_bits(train: list[np.ndarray], test: list[np.ndarray], name: str, bits: int,
                 levels: list[int], packet_frames: int) -> list[np.ndarray]:
    """Per test clip, the bits [F] each frame of this row costs under the training clips' counts."""
    per_clip = [np.zeros(len(t)) for t in test]
    train_streams = [streams(t, name, bits, levels, packet_frames) for t in train]
    test_streams = [streams(t, name, bits, levels, packet_frames) for t in test]
    for k in range(len(train_streams[0])):
        n_values, n_contexts = train_streams[0][k][2:]
        counts = np.full((n_contexts, n_values), 0.5)
        for s in train_streams:
            np.add.at(counts, (s[k][1], s[k][0]), 1)
        p = counts / counts.sum(1, keepdims=True)
        for out, s in zip(per_clip, test_streams):
            values, contexts = s[k][:2]
            out -= np.log2(p[contexts, values])
    return per_clip


def marginal_bits(train: list[np.ndarray], test: list[np.ndarray], bits: int) -> list[np.ndarray]:
    counts = np.bincount(np.concatenate(train), minlength=1 << bits) + 0.5
    p = counts / counts.sum()
    return [-np.log2(p[t]) for t in test]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="t1")
    parser.add_argument("--train", default="exp/lists/train.speech.scp")
    parser.add_argument("--n-train", type=int, default=300, help="training clips, drawn with seed 0")
    parser.add_argument("--list", default="exp/lists/valid25.scp")
    parser.add_argument("--bitrate", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--packet-frames", type=int, default=2, help="frames a packet (20 ms: 2)")
    args = parser.parse_args(argv)
    if args.packet_frames < 0:
        parser.error(f"--packet-frames must be 0 (no packets) or more, got {args.packet_frames}")
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    train_paths = [p for _, p in read_scp(args.train)]
    random.Random(0).shuffle(train_paths)
    train = symbols_of(codec, train_paths[: args.n_train], args.bitrate, args.seconds)
    test = symbols_of(codec, [p for _, p in read_scp(args.list)], args.bitrate, args.seconds)
    levels = codec.config.quantizer.fsq_levels
    frames = [t[LATENT].shape[-1] for t in test]
    marginal, context = [np.zeros(f) for f in frames], [np.zeros(f) for f in frames]
    others = [np.zeros(f) for f in frames]       # the context code of every sub-code but the low band
    print(f"{args.model} at {args.bitrate} bit/s: {len(train)} training clips, {sum(frames)} frames "
          f"of {args.list}, packets of {args.packet_frames} frames")
    print("row          bits  marginal  context")
    for name in test[0]:
        for row, bits in enumerate(codec.layout.bits(name)[: test[0][name].shape[0]]):
            tr, te = [t[name][row] for t in train], [t[name][row] for t in test]
            m, c = marginal_bits(tr, te, bits), context_bits(tr, te, name, bits, levels, args.packet_frames)
            for total, part in ((marginal, m), (context, c)) + (((others, c),) if name != "lowband" else ()):
                for out, p in zip(total, part):
                    out += p
            print(f"{name} {row:<6d} {bits:4d} {np.concatenate(m).mean():9.2f} {np.concatenate(c).mean():8.2f}")
    budget = round(args.bitrate / codec.frame_rate)
    print(f"a frame: marginal {np.concatenate(marginal).mean():.1f}, context {np.concatenate(context).mean():.1f} "
          f"of {budget} bits")
    if args.packet_frames:
        n = args.packet_frames
        packets = np.concatenate([c[: len(c) // n * n].reshape(-1, n).sum(1) for c in context])
        spare = n * budget - packets
        print(f"packets of {n} frames ({n * budget} bits): the context code exceeds them in "
              f"{100 * np.mean(spare < 0):.1f} %; bits left a frame: mean {np.maximum(spare, 0).mean() / n:.1f}, "
              f"5th percentile {np.percentile(spare, 5) / n:.1f}")
        if "lowband" in test[0]:
            # a frame with a low-band code has a non-zero first row (level 0 is "no code")
            left = []
            for t, o in zip(test, others):
                m = len(o) // n * n
                coded = (t["lowband"][0, :m] > 0).reshape(-1, n).sum(1)
                spare = n * budget - o[:m].reshape(-1, n).sum(1)
                left.append(np.repeat(spare[coded > 0] / coded[coded > 0], coded[coded > 0]))
            left = np.concatenate(left)
            print(f"for the low band: the rest takes {np.concatenate(others).mean():.1f} bits a frame; "
                  f"a frame with a low-band code would have {left.mean():.1f} (median {np.median(left):.1f}, "
                  f"10th-90th percentile {np.percentile(left, 10):.1f}-{np.percentile(left, 90):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

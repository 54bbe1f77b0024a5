"""Chunks per second of the training data stream on one thread (what a data worker delivers).

    python benchmarks/data_speed.py --track 2 --cache-mb 0 2048
    python benchmarks/data_speed.py --track 1 --cache-mb 0 2048 --shards 6

The stream is one data worker's shard (``--shards``: how many workers share the run, each with its
share of ``data.augment_cache_mb``), timed over ``--chunks`` after ``--warmup``. The cache pays once
per utterance and epoch, so time whole epochs (a shard of the train split holds about 2200 chunks of
1.2 s; the default times about two). Lists: the ``exp/lists`` ones of
docs/results.md (id path). A GPU step of batch B needs B chunks from the workers together.
"""

from __future__ import annotations

import argparse
import sys
import time

import soundfile as sf
import torch

from lrac.cli.common import user_errors
from lrac.lists import read_scp
from lrac.config import Config
from lrac.train.augment import Augmenter
from lrac.train.data import ChunkStream, Utterance, pairs_from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", type=int, choices=[1, 2], default=2)
    parser.add_argument("--speech", default="exp/lists/train.speech.scp")
    parser.add_argument("--noise", default="exp/lists/train.noise.scp")
    parser.add_argument("--rir", default="exp/lists/train.rir.scp")
    parser.add_argument("--cache-mb", type=float, nargs="+", default=[0.0, 2048.0],
                        help="data.augment_cache_mb values to time (the run's, before sharing out)")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--segment", type=int, default=28800)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=4500)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    cfg = Config()
    utts = [Utterance(uid, path, None) for uid, path in read_scp(args.speech) if sf.info(path).duration >= 1.0]
    augmenter = None
    if args.track == 2:
        augmenter = Augmenter(cfg.data, [p for _, p in read_scp(args.noise)],
                              [p for _, p in read_scp(args.rir)], cfg.model.sample_rate, seed=0)
    for cache_mb in args.cache_mb:
        run = ChunkStream(utts, args.segment, pairs_from(augmenter), cfg.data.shuffle_chunks,
                          cache_mb=cache_mb)
        stream = run.shard(0, args.shards)
        for _ in range(args.warmup):
            stream.next_chunk()
        start = time.perf_counter()
        for _ in range(args.chunks):
            stream.next_chunk()
        rate = args.chunks / (time.perf_counter() - start)
        print(f"track {args.track}, augment cache {cache_mb:g} MiB per run ({cache_mb / args.shards:.0f} per "
              f"shard of {args.shards}): {rate:.0f} chunks/s per worker")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

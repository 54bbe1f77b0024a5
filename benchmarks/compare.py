"""Paired comparison of lrac models on the same clips: the check behind every shipped-weights change.

Each model codes every clip of a list at each bitrate; PESQ-WB, ESTOI and the log-mel distance are
computed against the clip itself, with no delay search: lrac's output is aligned with its input by
design (lrac-score, which writes 16-bit files and searches a delay, came within 0.01 on PESQ-WB and
ESTOI and 0.06 dB on the mel distance of these on 40 test clips). The first model is the
reference: for every other one the table gives the mean difference and the two-sided Wilcoxon
signed-rank p-value, clip by clip.

    python benchmarks/compare.py t1 exp/t1-main/last.pt --list exp/lists/valid77.scp
    python benchmarks/compare.py t1 --list exp/lists/valid77.scp --gain-db -20 --by-corpus
    python benchmarks/compare.py t2 exp/t2-main/last.pt --list runs/track2-valid/degraded/noisy.scp \
        --targets runs/track2-valid/degraded/target.scp

``--targets`` scores against other references than the inputs, clip by clip (same ids): Track 2,
whose degraded inputs and clean targets ``benchmarks/track2_eval.py`` writes and lists.

A model is a model file, a training checkpoint or a pretrained name. ``--gain-db`` scales
each input (clipped to full scale, as a PCM file would be) and scales the output back, so the scores
measure how the codec copes with a quieter or louder talker. Scores are cached per clip in
``--cache`` (a JSON file), so a second run with one more model codes only that model.
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
from lrac.audio import AudioError, load_audio
from lrac.lists import read_scp
from lrac.cli.common import load_codec, user_errors
from lrac.eval.metrics import estoi, mel_distance, pesq_wb

METRICS = {"pesq_wb": pesq_wb, "estoi": estoi, "mel_distance": mel_distance}


def load_model(spec: str) -> Codec:
    """A model file, checkpoint or pretrained name -> its codec."""
    return load_codec(spec)


def code(codec: Codec, clean: np.ndarray, bitrate_bps: int, gain_db: float) -> np.ndarray:
    """Clip ``[T]`` -> decoded ``[T]`` at the given input gain (the output is scaled back)."""
    gain = 10.0 ** (gain_db / 20.0)
    x = np.clip(clean * gain, -1.0, 1.0).astype(np.float32)
    y = codec.decode(codec.encode(x, bitrate_bps), length=len(x))[0, 0].float().numpy()
    return y / gain


def score_model(spec: str, clips: list[tuple[str, str]], bitrates: list[int], gain_db: float,
                cache: dict, targets: dict[str, str] | None = None, targets_name: str = "") -> dict:
    """``{bitrate: {metric: [per clip]}}``, filling ``cache[key][clip]`` as it goes.

    ``targets``: clip id -> reference file (default: the clip itself)."""
    key = f"{spec} gain={gain_db:g}" + (f" targets={targets_name}" if targets else "")
    done = cache.setdefault(key, {})
    codec = None
    for i, (clip_id, path) in enumerate(clips):
        if clip_id in done and all(str(b) in done[clip_id] for b in bitrates):
            continue
        codec = codec or load_model(spec)
        clip, rate = load_audio(path, codec.sample_rate, warn_stereo=False)
        reference = load_audio(targets[clip_id], rate, warn_stereo=False)[0] if targets else clip
        entry = done.setdefault(clip_id, {})
        for bitrate in bitrates:
            decoded = code(codec, clip, bitrate, gain_db)
            entry[str(bitrate)] = {name: float(fn(reference, decoded, rate)) for name, fn in METRICS.items()}
        print(f"\r{spec}: {i + 1}/{len(clips)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {b: {m: np.array([done[c][str(b)][m] for c, _ in clips]) for m in METRICS} for b in bitrates}


def corpus_of(clip_id: str) -> str:
    """``speech__<corpus>__<utterance>`` -> ``<corpus>`` (the ids ``lrac-train`` lists give)."""
    parts = clip_id.split("__")
    return parts[1] if len(parts) >= 3 else "all"


def paired_cell(values: np.ndarray, base: np.ndarray | None) -> str:
    """``mean`` of one system's per-clip scores; with the reference's ``base`` (same clips, same order)
    also ``(mean difference, p=Wilcoxon signed-rank p-value)``."""
    cell = f"{values.mean():.3f}"
    if base is not None:
        diff = values - base
        p = wilcoxon(diff).pvalue if len(diff) > 1 and np.any(diff != 0) else 1.0
        cell += f" ({diff.mean():+.3f}, p={p:.2g})"
    return cell


def table(specs: list[str], scores: list[dict], bitrates: list[int], rows: np.ndarray | None = None) -> str:
    lines = ["| model | kbps | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for bitrate in bitrates:
        ref = scores[0][bitrate]
        for spec, score in zip(specs, scores):
            cells = []
            for metric in METRICS:
                values = score[bitrate][metric] if rows is None else score[bitrate][metric][rows]
                base = None if score is scores[0] else ref[metric] if rows is None else ref[metric][rows]
                cells.append(paired_cell(values, base))
            lines.append(f"| {spec} | {bitrate / 1000:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model files, checkpoints or pretrained names")
    parser.add_argument("--list", required=True, help="wav.scp-style list of clips (id path)")
    parser.add_argument("--bitrates", type=int, nargs="+", default=[1000, 6000])
    parser.add_argument("--targets", default=None,
                        help="list of reference clips with the same ids (default: each clip itself)")
    parser.add_argument("--gain-db", type=float, default=0.0, help="input level change in dB")
    parser.add_argument("--max", type=int, default=0, help="first N clips only (0: all)")
    parser.add_argument("--cache", type=Path, default=None, help="JSON file of per-clip scores")
    parser.add_argument("--by-corpus", action="store_true", help="one table per corpus as well")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    try:
        clips = read_scp(args.list)[: args.max or None]
        targets = dict(read_scp(args.targets)) if args.targets else None
    except AudioError as exc:  # a missing or malformed list: one line, exit 2
        parser.error(str(exc))
    missing = [c for c, _ in clips if targets is not None and c not in targets]
    if missing:
        parser.error(f"--targets {args.targets} has no entry for {len(missing)} clips, e.g. {missing[0]}")
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.is_file() else {}
    scores = []
    try:
        for spec in args.models:
            scores.append(score_model(spec, clips, args.bitrates, args.gain_db, cache, targets,
                                      args.targets or ""))
    finally:
        if args.cache:
            args.cache.write_text(json.dumps(cache))
    against = f", scored against {args.targets}" if targets else ""
    print(f"{len(clips)} clips of {args.list}, input gain {args.gain_db:g} dB{against}")
    print(table(args.models, scores, args.bitrates))
    if args.by_corpus:
        corpora = np.array([corpus_of(c) for c, _ in clips])
        for corpus in sorted(set(corpora)):
            rows = corpora == corpus
            print(f"\n{corpus}: {rows.sum()} clips")
            print(table(args.models, scores, args.bitrates, rows))
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

"""Paired differences between codecs already scored by ``anchors.py`` (or ``lrac-score``), clip by clip.

``anchors.py`` gives each codec's mean and 95% interval; whether one codec is ahead of another on
the same clips is a paired question, which this answers from the per-clip reports alone (nothing is
coded again): the first report is the reference, every other gets its mean difference on the clips
both scored and the two-sided Wilcoxon signed-rank p-value.

    python benchmarks/paired.py runs/anchors161/opus-6k/score/per_utterance.csv \\
        runs/anchors161/lrac-t1/6kbps/ref/score/per_utterance.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from compare import paired_cell   # benchmarks/compare.py: the same cells as its table

METRICS = ("pesq_wb", "estoi", "si_sdr", "mel_distance")


def load_scores(path: Path) -> dict[str, dict[str, float]]:
    """``per_utterance.csv`` -> ``{utt: {metric: value}}`` for the clips scored ``ok``."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status") == "ok"]
    return {r["utt"]: {m: float(r[m]) for m in METRICS if r.get(m) not in (None, "")} for r in rows}


def default_name(report: Path) -> str:
    """``OUT/opus-6k/score/per_utterance.csv`` -> ``OUT/opus-6k``; ``OUT/lrac-x/6kbps/ref/score/...``
    -> ``lrac-x/6kbps``: the two folders above the report's own (``score``, and ``ref`` for lrac)."""
    parts = [q for q in report.parent.parts if q != "ref"]
    if parts and parts[-1] == "score":
        parts = parts[:-1]
    return "/".join(parts[-2:]) or str(report)


def paired_table(paths: list[Path], names: list[str]) -> str:
    """A markdown table: each report's mean per metric, and its paired difference from the first."""
    scores = [load_scores(p) for p in paths]
    common = sorted(set.intersection(*(set(s) for s in scores)))
    if not common:
        raise ValueError("the reports share no scored clip")
    metrics = [m for m in METRICS if all(m in s[u] for s in scores for u in common)]
    lines = [f"{len(common)} clips scored in every report",
             "| codec | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    ref = {m: np.array([scores[0][u][m] for u in common]) for m in metrics}
    for name, s in zip(names, scores):
        cells = [paired_cell(np.array([s[u][m] for u in common]), None if s is scores[0] else ref[m])
                 for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="per_utterance.csv files; the first is the reference")
    parser.add_argument("--names", default="", help="comma-separated row names (default: the reports' folders)")
    args = parser.parse_args(argv)
    names = args.names.split(",") if args.names else [default_name(p) for p in args.reports]
    if len(names) != len(args.reports):
        parser.error(f"{len(names)} names for {len(args.reports)} reports")
    missing = [str(p) for p in args.reports if not p.is_file()]
    if missing:
        parser.error(f"no such report: {', '.join(missing)}")
    try:
        print(paired_table(args.reports, names))
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())

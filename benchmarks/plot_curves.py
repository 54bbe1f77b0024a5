"""Validation mel loss against wall-clock time for training runs (reads OUT/train.jsonl).

    python benchmarks/plot_curves.py exp/t1-frame exp/t1-baseline --out docs/curves_t1.png

Time is training time from each run's first logged step: a pause of more than ``--max-gap``
minutes between two log records (a kill, then ``--resume`` later) is not counted. A run's label is
its folder name.
Needs matplotlib (`pip install 'lrac[plots]'`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curve(run: Path, max_gap_minutes: float = 5.0) -> tuple[list[float], list[float], list[int]]:
    """``(training minutes since the first logged step, valid_mel, step)`` of one run."""
    rows = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["time"])
    minutes, elapsed, previous = [], 0.0, rows[0]["time"]
    for r in rows:
        gap = (r["time"] - previous) / 60
        elapsed += gap if gap <= max_gap_minutes else 0.0
        previous = r["time"]
        minutes.append(elapsed)
    valid = [(m, r) for m, r in zip(minutes, rows) if "valid_mel" in r]
    return [m for m, _ in valid], [r["valid_mel"] for _, r in valid], [r["step"] for _, r in valid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-gap", type=float, default=5.0, help="minutes; longer pauses are not counted")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in args.runs:
        minutes, mel, steps = read_curve(run, args.max_gap)
        ax.plot(minutes, mel, marker="o", label=run.name)
        print(run.name, " ".join(f"{m:.0f}min/step{s}:{v:.3f}" for m, v, s in zip(minutes, mel, steps)))
    ax.set_xlabel("training minutes (wall clock, pauses excluded)")
    ax.set_ylabel("validation mel loss (1 and 6 kbps mean)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()

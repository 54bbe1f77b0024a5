"""Validation mel loss against wall-clock time for training runs (reads OUT/train.jsonl).

    python benchmarks/plot_curves.py exp/t1-frame exp/t1-baseline --out docs/curves_t1.png

Time is measured from each run's first logged training step; a run's label is its folder name.
Needs matplotlib (`pip install 'lrac[plots]'`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curve(run: Path) -> tuple[list[float], list[float], list[int]]:
    """``(minutes since the first logged step, valid_mel, step)`` of one run."""
    rows = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines() if line.strip()]
    start = min(r["time"] for r in rows)
    valid = [r for r in rows if "valid_mel" in r]
    return ([(r["time"] - start) / 60 for r in valid], [r["valid_mel"] for r in valid],
            [r["step"] for r in valid])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in args.runs:
        minutes, mel, steps = read_curve(run)
        ax.plot(minutes, mel, marker="o", label=run.name)
        print(run.name, " ".join(f"{m:.0f}min/step{s}:{v:.3f}" for m, v, s in zip(minutes, mel, steps)))
    ax.set_xlabel("wall-clock minutes since the first step")
    ax.set_ylabel("validation mel loss (1 and 6 kbps mean)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()

"""The training campaign's validation curve: PESQ-WB and ESTOI of checkpoints on a fixed clip list.

Every checkpoint (a run's ``snap/step-*.pt`` copies of ``last.pt``, or any model file) codes the same
validation clips at 1 and 6 kbps; one JSON line per checkpoint and bitrate is appended to ``--log``
(checkpoints already there are not scored again), and ``--plot`` draws the figures against the
training step, with the shipped model's as dashed lines:

    python benchmarks/valid_curve.py exp/t1-lb-main/snap/*.pt --list exp/lists/valid77.scp --max 30 \
        --log docs/curve_t1.jsonl --reference t1 --plot docs/curve_t1.png

The clips are the list's first ``--max`` (the fixed list of the campaign); scores come from
``benchmarks/compare.py`` (no delay search: lrac is aligned by design).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import score_model  # noqa: E402

from lrac.cli.common import user_errors
from lrac.lists import read_scp  # noqa: E402


def checkpoint_step(path: str) -> int | None:
    """The training step a checkpoint or model file stores (None for a pretrained name)."""
    if not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return int(state["step"]) if isinstance(state, dict) and "step" in state else None


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("pesq_wb", "estoi")):
        for bitrate, colour in ((1000, "tab:blue"), (6000, "tab:red")):
            runs = sorted({r["run"] for r in rows if r["step"] is not None})
            for run in runs:
                pts = sorted((r["step"], r[metric]) for r in rows
                             if r["run"] == run and r["bitrate"] == bitrate and r["step"] is not None)
                if pts:
                    ax.plot(*zip(*pts), "o-", color=colour, alpha=0.4 + 0.6 * (run == runs[-1]),
                            label=f"{run}, {bitrate // 1000} kbps")
            for r in rows:
                if r["step"] is None and r["bitrate"] == bitrate:
                    ax.axhline(r[metric], color=colour, ls="--", lw=1, label=f"{r['run']}, {bitrate // 1000} kbps")
        ax.xaxis.set_major_formatter(lambda step, _: f"{step / 1000:g}k")   # 6-digit steps overlap
        ax.set_xlabel("training step")
        ax.set_ylabel({"pesq_wb": "PESQ-WB", "estoi": "ESTOI"}[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", help="checkpoints, model files or pretrained names")
    parser.add_argument("--list", required=True, help="wav.scp-style list of validation clips")
    parser.add_argument("--max", type=int, default=30, help="the list's first N clips")
    parser.add_argument("--log", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--reference", action="append", default=[], help="pretrained name or file, drawn dashed")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = read_scp(args.list)[: args.max]
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()] if args.log.is_file() else []
    done = {r["file"] for r in rows}
    for spec in [*args.reference, *args.checkpoints]:
        if spec in done:
            continue
        scores = score_model(spec, clips, [1000, 6000], 0.0, {})
        run = Path(spec).parent.parent.name if "snap" in Path(spec).parts else Path(spec).stem
        for bitrate in (1000, 6000):
            per_clip = scores[bitrate]
            row = {"file": spec, "run": run, "step": checkpoint_step(spec) if spec not in args.reference else None,
                   "bitrate": bitrate, "clips": len(clips),
                   "pesq_wb": round(float(np.mean(per_clip["pesq_wb"])), 4),
                   "estoi": round(float(np.mean(per_clip["estoi"])), 4)}
            rows.append(row)
            with args.log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{run:24s} step {row['step']}  {bitrate:5d} bit/s  PESQ-WB {row['pesq_wb']:.3f}  "
                  f"ESTOI {row['estoi']:.3f}", flush=True)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

"""Track 2 (enhancement) evaluation: noisy and reverberant test clips, and real noisy pairs.

1. Builds a degraded copy of the test clips once (``OUT/degraded/``, listed in ``noisy.scp`` and
   ``target.scp`` there for ``benchmarks/compare.py --targets``), with noises and RIRs that
   training never saw (default: the shared *test* noise and RIR lists), by the training
   augmentation itself (:class:`lrac.train.augment.Augmenter`, Track 2 rules): noise on every clip at
   an SNR drawn from ``--snr`` dB, reverb on ``--reverb-prob`` of them. References are the
   early-reflection targets a Track 2 model is trained to output.
2. Scores the unprocessed noisy input, then every ``--model`` at each of its bitrates (coded through
   the real ``.lrac`` files), against those references; the same on the real noisy/clean pairs of
   ``../shared/data/pairs`` (references: the clean recordings).
3. With ``--ceiling``, each model also codes the references themselves: what it would score if
   its enhancement were perfect, the most it can gain over the noisy input.

    python benchmarks/track2_eval.py --model t2 --model t1 --out runs/track2 --n 40 [--ceiling]

Writes ``OUT/track2.md`` (one table: rows = input or model x bitrate, for each of the two sets; then
PESQ-WB and ESTOI by condition, SNR band x reverb, from ``OUT/degraded/conditions.tsv``),
``OUT/track2.json`` and every system's per-clip report, ``OUT/<set>/<system>/score/per_utterance.csv``
(for ``benchmarks/paired.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lrac.audio import load_audio, write_audio
from lrac.cli.common import user_errors
from lrac.config import DataConfig
from lrac.eval import score as S
from lrac.train.augment import Augmenter

from anchors import data_root, default_clips  # the same data folder and clip choice as the anchors

SHARED = data_root()
RATE = 24000


def shared_list(split: str, kind: str) -> list[Path]:
    """Files of ``splits/<split>.<kind>.txt`` (paths relative to ``shared/data``)."""
    lines = (SHARED / "splits" / f"{split}.{kind}.txt").read_text().split()
    return [SHARED / p for p in lines]


def read_conditions(path: Path) -> dict[str, tuple[float, bool]]:
    """``conditions.tsv`` -> ``{utt: (snr_db, reverberant)}`` (empty when the file is absent)."""
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()[1:]
    return {u: (float(snr), rev == "True") for u, snr, rev in (line.split("\t") for line in lines if line)}


def make_degraded(clean: list[Path], noises: list[Path], rirs: list[Path], out: Path, snr_db: list[float],
                  reverb_prob: float, max_seconds: float, seed: int
                  ) -> tuple[dict[str, Path], dict[str, Path], dict[str, tuple[float, bool]]]:
    """``(inputs, targets, conditions)``: ``out/noisy/<id>.wav`` and ``out/target/<id>.wav`` (made once,
    reused) and each clip's ``(snr_db, reverberant)`` as ``out/conditions.tsv`` keeps them."""
    cfg = DataConfig(noise_prob=1.0, reverb_prob=reverb_prob, snr_db=list(snr_db), simulate_rooms=False)
    aug = Augmenter(cfg, noise_paths=[str(p) for p in noises], rir_paths=[str(p) for p in rirs],
                    sample_rate=RATE, seed=seed)
    inputs, targets = {}, {}
    conditions = read_conditions(out / "conditions.tsv")   # of the clips made by an earlier run
    for i, path in enumerate(sorted(clean)):
        utt = path.stem
        noisy_path, target_path = out / "noisy" / f"{utt}.wav", out / "target" / f"{utt}.wav"
        if not (noisy_path.exists() and target_path.exists()):
            speech = load_audio(path, RATE, warn_stereo=False)[0][: int(max_seconds * RATE)]
            result = aug(speech, np.random.default_rng([seed, i]))
            write_audio(noisy_path, result.input, RATE)
            write_audio(target_path, result.target, RATE)
            conditions[utt] = (result.snr_db, result.rir is not None)
        inputs[utt], targets[utt] = noisy_path, target_path
    for name, paths in (("noisy", inputs), ("target", targets)):  # for benchmarks/compare.py --targets
        (out / f"{name}.scp").write_text("".join(f"{utt} {p.resolve()}\n" for utt, p in paths.items()))
    conditions = {utt: c for utt, c in conditions.items() if utt in inputs}
    (out / "conditions.tsv").write_text("utt\tsnr_db\treverb\n" + "".join(
        f"{utt}\t{snr}\t{rev}\n" for utt, (snr, rev) in conditions.items()))
    return inputs, targets, conditions


def pairs() -> tuple[dict[str, Path], dict[str, Path]]:
    """``(noisy, clean)`` of every real pair in ``shared/data/pairs/<source>/{noisy,clean}``."""
    noisy, clean = {}, {}
    for source in sorted((SHARED / "pairs").glob("*")):
        for path in sorted((source / "noisy").glob("*")):
            utt = f"{source.name}-{path.stem}"
            noisy[utt], clean[utt] = path, source / "clean" / path.name
    return noisy, clean


def evaluate(name: str, inputs: dict[str, Path], targets: dict[str, Path], codecs: list, out: Path,
             metrics: list[str], jobs: int, ceiling: bool = False) -> tuple[list[dict], dict[str, list[dict]]]:
    """``(summary rows, {system: per-clip rows})`` of the unprocessed input and every codec and
    bitrate on one set; with ``ceiling`` also every codec coding the references themselves."""
    rows, per_clip = [], {}

    def add(system: str, decoded: dict[str, Path], folder: Path) -> None:
        result = S.score(targets, decoded, metrics, jobs=jobs)
        S.write_report(folder / "score", result, f"{name}: {system}")
        rows.append({"set": name, "system": system, "n": len(result.scored), "metrics": result.summary})
        per_clip[system] = result.scored

    add("unprocessed input", inputs, out / name / "input")
    for clean in (False, True) if ceiling else (False,):   # clean: the model codes the references
        suffix = ", clean input" if clean else ""
        for model_name, codec in codecs:
            for bitrate in codec.bitrates_bps:
                folder = out / name / (model_name + ("-clean" if clean else "")) / f"{bitrate // 1000}kbps"
                decoded, _, _ = S.code_testset(codec, targets if clean else inputs, folder, bitrate)
                add(f"{model_name} {bitrate / 1000:g} kbps{suffix}", decoded, folder)
                print(f"{name}: {model_name}{suffix} {bitrate} bit/s done", file=sys.stderr)
    return rows, per_clip


def condition_table(per_clip: dict[str, list[dict]], conditions: dict[str, tuple[float, bool]],
                    snr_edges: list[float], metrics: tuple[str, ...] = ("pesq_wb", "estoi")) -> str:
    """Mean of each metric per system, by SNR band (``snr_edges`` in dB) and reverb: where a system
    gains or loses against the noisy input. Columns are the conditions, with their clip counts."""
    bands = list(zip(snr_edges[:-1], snr_edges[1:]))
    groups = [(lo, hi, rev) for lo, hi in bands for rev in (False, True)]

    def members(lo: float, hi: float, rev: bool) -> set[str]:
        last = hi == snr_edges[-1]
        return {u for u, (snr, r) in conditions.items()
                if r == rev and lo <= snr and (snr < hi or (last and snr <= hi))}

    sets = [members(*g) for g in groups]
    keep = [i for i, m in enumerate(sets) if m]
    head = "| system | metric | " + " | ".join(
        f"{groups[i][0]:g}-{groups[i][1]:g} dB{', reverb' if groups[i][2] else ''} ({len(sets[i])})"
        for i in keep) + " |"
    lines = [head, "|" + "---|" * (2 + len(keep))]
    for system, rows in per_clip.items():
        by_utt = {r["utt"]: r for r in rows}
        for m in metrics:
            cells = []
            for i in keep:
                values = [float(by_utt[u][m]) for u in sets[i] if u in by_utt and by_utt[u].get(m) is not None]
                cells.append(f"{np.nanmean(values):.2f}" if values else "-")
            lines.append(f"| {system} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(rows: list[dict], metrics: list[str]) -> str:
    head = "| set | system | n | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (3 + len(metrics))]
    for r in rows:
        cells = [f"{r['metrics'][m]['mean']:.3f}" if r["metrics"].get(m, {}).get("mean") is not None else "-"
                 for m in metrics]
        lines.append(f"| {r['set']} | {r['system']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="lrac model file or pretrained name")
    ap.add_argument("--out", type=Path, default=Path("runs/track2"))
    ap.add_argument("--split", choices=["test", "valid"], default="test",
                    help="clips, noises and RIRs of this split; valid (for choosing a model) skips the real pairs")
    ap.add_argument("--n", type=int, default=0, help="N clips spread over the split (0: all)")
    ap.add_argument("--snr", type=float, nargs=2, default=[0.0, 20.0], help="SNR range in dB")
    ap.add_argument("--reverb-prob", type=float, default=0.5)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--metrics", default="pesq_wb,estoi,si_sdr,mel_distance")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--ceiling", action="store_true",
                    help="each model also codes the clean references: its score with perfect enhancement")
    args = ap.parse_args(argv)
    import torch

    from lrac.cli.common import load_codec

    torch.set_num_threads(1)
    metrics = args.metrics.split(",")
    split = args.split
    clean = default_clips(args.n, split) if args.n else shared_list(split, "speech")  # test: the anchors' clips
    inputs, targets, conditions = make_degraded(clean, shared_list(split, "noise"), shared_list(split, "rir"),
                                    args.out / "degraded", args.snr, args.reverb_prob, args.max_seconds,
                                    args.seed)
    codecs = [(Path(m).stem, load_codec(m)) for m in args.model]
    name = f"{split}, noisy + reverb"
    rows, per_clip = evaluate(name, inputs, targets, codecs, args.out, metrics, args.jobs, args.ceiling)
    if split == "test":
        rows += evaluate("real pairs", *pairs(), codecs, args.out, metrics, args.jobs)[0]
    edges = list(np.linspace(args.snr[0], args.snr[1], 5))
    by_condition = tuple(m for m in ("pesq_wb", "estoi") if m in metrics)
    text = (f"{len(inputs)} {split} clips degraded with the {split}-split noises and RIRs (SNR uniform in "
            f"[{args.snr[0]:g}, {args.snr[1]:g}] dB, reverb p={args.reverb_prob:g}); references are the "
            "early-reflection targets."
            + (" Real pairs: shared/data/pairs, references the clean recordings." if split == "test" else "")
            + "\n\n" + table(rows, metrics)
            + (f"\nThe {name} clips by condition (SNR band, reverb; clips in brackets):\n\n"
               + condition_table(per_clip, conditions, edges, by_condition) if conditions and by_condition else ""))
    (args.out / "track2.md").write_text(text)
    (args.out / "track2.json").write_text(json.dumps(S.json_safe(rows), indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

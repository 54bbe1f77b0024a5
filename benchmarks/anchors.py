"""lrac beside the codecs a user would otherwise pick, on the same clips, in one table.

Anchors (each skipped with a message when its tool is missing):

* Opus 6 kbps            ``opusenc``/``opusdec`` (Debian: opus-tools)
* Codec2 1200 and 700C   ``c2enc``/``c2dec`` (Debian: codec2), 8 kHz
* Speex wideband q0, q1  ``speexenc``/``speexdec`` (Debian: speex), its two lowest WB modes
* Lyra v2 3.2 and 6 kbps the TFLite graphs in ``../shared/anchors/lyra`` run by ``ai-edge-litert``

lrac rows come from ``--model`` (a model file or pretrained name; repeatable), coded and scored by
``lrac.eval.score.code_and_score`` at each of the model's bitrates.

    python benchmarks/anchors.py --out runs/anchors --n 12 --model exp/model.pt --jobs 2

Writes ``OUT/anchors.md`` (the table) and ``OUT/anchors.json`` (mean and 95% CI of every metric),
plus each codec's decoded audio and per-utterance reports under ``OUT/<codec>/``. A second table
gives PESQ-WB and ESTOI by corpus (the source file's folder): a mean over a split hides that a codec
can lead on one kind of speech and lag on another (the shared test split is half acted clips).
``--rescore`` scores the decoded audio already in ``OUT`` again (after a change to the scoring),
keeping the bitrates and speeds of ``OUT/anchors.json``.
Real bitrates count the codec's frames only: Ogg pages and header packets are left out for Opus
and Speex, the 32-byte header of ``.lrac`` files is counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lrac.audio import load_audio, resample, write_audio
from lrac.cli.common import user_errors
from lrac.eval import score as S
from lrac.lists import write_scp

REPO = Path(__file__).resolve().parents[1]
EVAL_RATE = 24000  # references are prepared at the codec's rate
LYRA_DIR = REPO.parent / "shared" / "anchors" / "lyra"

# A codec run: (input wav at the anchor's rate, scratch folder) -> (decoded [T], its rate, payload bytes)
RunFn = Callable[[Path, Path], tuple[np.ndarray, int, int]]


@dataclass
class Anchor:
    name: str
    nominal_kbps: float
    rate: int  # the rate the codec is fed
    run: RunFn
    missing: str = ""  # why it cannot run here; empty when it can


def _sh(*cmd: str | Path) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{Path(str(cmd[0])).name} exited with {done.returncode}: {tail[0]}")


def _missing_tools(*tools: str) -> str:
    absent = [t for t in tools if shutil.which(t) is None]
    return f"{', '.join(absent)} not found" if absent else ""


def ogg_payload_bytes(data: bytes, header_packets: int = 2) -> int:
    """Bytes of the codec packets in a single-stream Ogg file, less its first ``header_packets``."""
    sizes, current, pos = [], 0, 0
    while pos + 27 <= len(data):
        if data[pos:pos + 4] != b"OggS":
            raise ValueError("not an Ogg stream")
        n_segments = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + n_segments]
        for value in lacing:  # a packet ends at the first lacing value below 255
            current += value
            if value < 255:
                sizes.append(current)
                current = 0
        pos += 27 + n_segments + sum(lacing)
    return sum(sizes[header_packets:])


# --------------------------------------------------------------------------------------------
# Command-line codecs
# --------------------------------------------------------------------------------------------


def opus(kbps: float) -> Anchor:
    def run(wav: Path, work: Path) -> tuple[np.ndarray, int, int]:
        _sh("opusenc", "--quiet", "--bitrate", f"{kbps:g}", wav, work / "s.opus")
        _sh("opusdec", "--quiet", "--rate", str(EVAL_RATE), work / "s.opus", work / "out.wav")
        audio, rate = load_audio(work / "out.wav")
        return audio, rate, ogg_payload_bytes((work / "s.opus").read_bytes())

    return Anchor(f"opus-{kbps:g}k", kbps, EVAL_RATE, run, _missing_tools("opusenc", "opusdec"))


def codec2(mode: str, kbps: float) -> Anchor:
    def run(wav: Path, work: Path) -> tuple[np.ndarray, int, int]:
        audio, _ = load_audio(wav)
        pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")
        pcm.tofile(work / "in.raw")
        # ".bit", not ".c2": c2enc adds a header to .c2 files, which is not payload
        _sh("c2enc", mode, work / "in.raw", work / "s.bit")
        _sh("c2dec", mode, work / "s.bit", work / "out.raw")
        out = np.fromfile(work / "out.raw", dtype="<i2").astype(np.float32) / 32768
        return out, 8000, (work / "s.bit").stat().st_size

    return Anchor(f"codec2-{mode.lower()}", kbps, 8000, run, _missing_tools("c2enc", "c2dec"))


def speex_wb(quality: int, kbps: float) -> Anchor:
    def run(wav: Path, work: Path) -> tuple[np.ndarray, int, int]:
        _sh("speexenc", "--wideband", "--quality", str(quality), wav, work / "s.spx")
        _sh("speexdec", work / "s.spx", work / "out.wav")
        audio, rate = load_audio(work / "out.wav")
        return audio, rate, ogg_payload_bytes((work / "s.spx").read_bytes())

    return Anchor(f"speex-wb-q{quality}", kbps, 16000, run, _missing_tools("speexenc", "speexdec"))


# --------------------------------------------------------------------------------------------
# Lyra v2 through TFLite
# --------------------------------------------------------------------------------------------


class LyraV2:
    """Lyra v2 (SoundStream) at 16 kHz, 20 ms frames: encoder -> RVQ (4-bit stages) -> LyraGAN.

    Both networks are stateful (streaming), so one instance codes one stream; :meth:`code` builds
    fresh interpreters per call. The RVQ indices go straight to the decoder: packing them into
    ``ceil(4 * stages / 8)``-byte packets is lossless, so only the packet size is counted.
    """

    RATE, FRAME, STAGE_BITS, MAX_STAGES = 16000, 320, 4, 46
    STAGES = {3200: 16, 6000: 30, 9200: 46}

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _interpreter(self, name: str):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.folder / name), num_threads=1)
        interpreter.allocate_tensors()
        return interpreter

    def code(self, audio: np.ndarray, bitrate_bps: int) -> tuple[np.ndarray, int]:
        """16 kHz ``[T]`` audio -> (decoded ``[T]``, payload bytes)."""
        stages = self.STAGES[bitrate_bps]
        encoder, decoder = self._interpreter("soundstream_encoder.tflite"), self._interpreter("lyragan.tflite")
        quantizer = self._interpreter("quantizer.tflite")
        quantize, dequantize = quantizer.get_signature_runner("encode"), quantizer.get_signature_runner("decode")
        enc_in, enc_out = encoder.get_input_details()[0]["index"], encoder.get_output_details()[0]["index"]
        dec_in, dec_out = decoder.get_input_details()[0]["index"], decoder.get_output_details()[0]["index"]
        n_frames = -(-len(audio) // self.FRAME)
        # the encoder sees the 16-bit grid, as from a microphone
        x = np.zeros(n_frames * self.FRAME, np.float32)
        x[:len(audio)] = np.round(np.clip(audio, -1, 1) * 32767) / 32768
        out = np.empty_like(x)
        indices = np.full((self.MAX_STAGES, 1, 1), -1, np.int32)
        for k in range(n_frames):
            encoder.set_tensor(enc_in, x[None, k * self.FRAME:(k + 1) * self.FRAME])
            encoder.invoke()
            features = encoder.get_tensor(enc_out).reshape(1, 1, -1)
            codes = quantize(input_frames=features, num_quantizers=np.array(stages, np.int32))["output_0"]
            indices[:stages, 0, 0] = codes.reshape(-1)[:stages]
            decoder.set_tensor(dec_in, dequantize(encoding_indices=indices)["output_0"].reshape(1, 1, -1))
            decoder.invoke()
            out[k * self.FRAME:(k + 1) * self.FRAME] = decoder.get_tensor(dec_out).reshape(-1)
        payload = n_frames * math.ceil(stages * self.STAGE_BITS / 8)
        return out[:len(audio)], payload


def lyra(bitrate_bps: int, folder: Path = LYRA_DIR) -> Anchor:
    def run(wav: Path, work: Path) -> tuple[np.ndarray, int, int]:
        audio, _ = load_audio(wav)
        decoded, payload = LyraV2(folder).code(audio, bitrate_bps)
        return decoded, LyraV2.RATE, payload

    missing = ""
    if importlib.util.find_spec("ai_edge_litert") is None:
        missing = "ai-edge-litert not installed (pip install ai-edge-litert)"
    elif not (folder / "lyragan.tflite").is_file():
        missing = f"Lyra models not found in {folder}"
    return Anchor(f"lyra-v2-{bitrate_bps / 1000:g}k", bitrate_bps / 1000, LyraV2.RATE, run, missing)


def default_anchors(lyra_dir: Path = LYRA_DIR) -> list[Anchor]:
    return [opus(6), codec2("1200", 1.2), codec2("700C", 0.7), speex_wb(0, 3.95), speex_wb(1, 5.75),
            lyra(3200, lyra_dir), lyra(6000, lyra_dir)]


# --------------------------------------------------------------------------------------------
# Running and tabulating
# --------------------------------------------------------------------------------------------


def data_root() -> Path:
    """The shared data folder: ``LRAC_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("LRAC_DATA", REPO.parent / "shared" / "data"))


def default_clips(n: int, split: str = "test") -> list[Path]:
    """``n`` clips spread evenly over a speech split of the shared data (see :func:`data_root`)."""
    root = data_root()
    listing = root / "splits" / f"{split}.speech.txt"
    if not listing.is_file():
        raise SystemExit(f"no --testset given and no {split} split at {listing} (set LRAC_DATA)")
    paths = [root / p for p in listing.read_text().split()]
    step = max(1, len(paths) // n)
    return paths[::step][:n]


def prepare_references(sources: dict[str, Path], folder: Path, max_seconds: float | None) -> dict[str, Path]:
    """The references as every codec gets them: mono, 24 kHz, cropped, 16-bit wav, plus reference.scp."""
    refs = {}
    for utt, path in sources.items():
        audio, _ = load_audio(path, EVAL_RATE)
        if max_seconds:
            audio = audio[:int(max_seconds * EVAL_RATE)]
        refs[utt] = folder / f"{utt}.wav"
        write_audio(refs[utt], audio, EVAL_RATE)
    write_scp(folder / "reference.scp", {u: p.resolve() for u, p in refs.items()})
    write_scp(folder / "sources.scp", {u: Path(p).resolve() for u, p in sources.items()})
    return refs


def corpus_of(sources: dict[str, Path]) -> dict[str, str]:
    """Utterance id -> its corpus: the name of the folder its source file is in."""
    return {utt: Path(path).parent.name for utt, path in sources.items()}


def by_corpus(result: S.ScoreResult, corpus: dict[str, str]) -> dict[str, dict]:
    """``{corpus: {metric: mean_ci95}}`` over the scored utterances of each corpus."""
    groups: dict[str, list[dict]] = {}
    for row in result.scored:
        groups.setdefault(corpus.get(row["utt"], "?"), []).append(row)
    return {name: S.summarize(rows, result.columns) for name, rows in sorted(groups.items())}


def run_anchor(anchor: Anchor, refs: dict[str, Path], folder: Path) -> tuple[dict[str, Path], dict]:
    """Code every reference with ``anchor``; decoded wavs go to ``folder/wav``. Failures are reported."""
    decoded: dict[str, Path] = {}
    seconds = elapsed = 0.0
    payload = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for utt, ref in refs.items():
            audio, _ = load_audio(ref)
            write_audio(work / "in.wav", resample(audio, EVAL_RATE, anchor.rate), anchor.rate)
            try:
                start = time.perf_counter()
                out, rate, n_bytes = anchor.run(work / "in.wav", work)
                elapsed += time.perf_counter() - start
            except (RuntimeError, ValueError, OSError) as exc:
                print(f"  {anchor.name} {utt}: failed: {exc}", file=sys.stderr)
                continue
            decoded[utt] = folder / "wav" / f"{utt}.wav"
            write_audio(decoded[utt], out, rate)
            seconds += len(audio) / EVAL_RATE
            payload += n_bytes
    stats = {"bitrate_bps_real": 8 * payload / seconds if seconds else math.nan,
             "rtf": elapsed / seconds if seconds else math.nan}
    return decoded, stats


COLUMNS = [("pesq_wb", "PESQ-WB", 2), ("pesq_nb", "PESQ-NB", 2), ("stoi", "STOI", 3), ("estoi", "ESTOI", 3),
           ("si_sdr", "SI-SDR dB", 1), ("mel_distance", "mel dB ↓", 2), ("lsd", "LSD ↓", 2),
           ("dnsmos_ovrl", "DNSMOS OVRL", 2), ("dnsmos_sig", "DNSMOS SIG", 2), ("visqol", "ViSQOL", 2)]


def write_table(rows: list[dict], out: Path, notes: list[str]) -> Path:
    """``anchors.md``: one row per codec/bitrate, metric means (95% CIs are in anchors.json)."""
    present = [c for c in COLUMNS if any(r["metrics"].get(c[0], {}).get("n") for r in rows)]
    head = ["codec", "nominal kbps", "real kbps", "RTF", "n", *[h for _, h, _ in present]]
    lines = ["# lrac and anchor codecs", "", *notes, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r["nominal_kbps"], r["codec"])):
        cells = [r["codec"], f"{r['nominal_kbps']:g}", f"{r['bitrate_bps_real'] / 1000:.2f}",
                 f"{r['rtf']:.3f}", str(r["n"])]
        for col, _, digits in present:
            mean = r["metrics"].get(col, {}).get("mean")
            cells.append("–" if mean is None else f"{mean:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Means over clips (↓: lower is better). Real kbps: codec frames only (no Ogg pages "
              "or header packets; .lrac files include their 32-byte header). RTF: coding wall time "
              "(encode + decode, process start included for command-line tools) / audio duration, "
              "one CPU thread. Every output is delay-compensated before scoring (docs/scoring.md)."]
    lines += corpus_table(rows)
    path = out / "anchors.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus_table(rows: list[dict]) -> list[str]:
    """Markdown lines: PESQ-WB / ESTOI of each row by corpus (empty without ``by_corpus``)."""
    names = sorted({c for r in rows for c in r.get("by_corpus", {})})
    if not names:
        return []
    # clips scored per corpus (every summary has the delay column), the most any codec scored
    counts = {c: max(r["by_corpus"][c]["delay_ms"]["n"] for r in rows if c in r.get("by_corpus", {}))
              for c in names}
    lines = ["", "## By corpus: PESQ-WB / ESTOI", "",
             "| codec | " + " | ".join(f"{c} ({counts[c]})" for c in names) + " |",
             "|---|" + "---|" * len(names)]
    for r in sorted(rows, key=lambda r: (r["nominal_kbps"], r["codec"])):
        cells = []
        for c in names:
            m = r.get("by_corpus", {}).get(c, {})
            means = [(m.get(k, {}).get("mean"), d) for k, d in (("pesq_wb", 2), ("estoi", 3))]
            cells.append(" / ".join("–" if v is None else f"{v:.{d}f}" for v, d in means))
        lines.append(f"| {r['codec']} | " + " | ".join(cells) + " |")
    return lines


def decoded_folder(out: Path, row: dict) -> Path:
    """Where a row of ``anchors.json`` keeps its decoded audio: ``OUT/<anchor>/wav`` or, for lrac
    rows (``lrac <name> <B>kbps``), ``OUT/lrac-<name>/<B>kbps/ref/wav``."""
    if row["codec"].startswith("lrac "):
        _, name, label = row["codec"].split(" ")
        return out / f"lrac-{name}" / label / "ref" / "wav"
    return out / row["codec"] / "wav"


def rescore(out: Path, metrics: list[str] | None, jobs: int) -> list[dict]:
    """Score every row of ``OUT/anchors.json`` again from its decoded files."""
    rows = json.loads((out / "anchors.json").read_text())
    refs = S.load_list(out / "ref" / "reference.scp")
    sources = out / "ref" / "sources.scp"  # (runs before this file was written have no corpus table)
    corpus = corpus_of(S.load_list(sources)) if sources.is_file() else {}
    for row in rows:
        folder = decoded_folder(out, row)
        print(f"{row['codec']} ...", file=sys.stderr)
        result = S.score(refs, folder, metrics, jobs=jobs)
        S.write_report(folder.parent / "score", result, row["codec"])
        row.update(n=len(result.scored), metrics=result.summary)
        if corpus:
            row["by_corpus"] = by_corpus(result, corpus)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testset", help="folder or reference.scp (default: --n clips of the shared test split)")
    ap.add_argument("--n", type=int, default=12, help="clips taken from the shared test split")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="crop each clip (0: keep whole)")
    ap.add_argument("--out", type=Path, default=Path("runs/anchors"))
    ap.add_argument("--model", action="append", default=[], help="lrac model file or pretrained name")
    ap.add_argument("--config", action="append", default=[],
                    help="untrained lrac codec from a preset (checks the plumbing only)")
    ap.add_argument("--codecs", default="", help="comma-separated anchor names to run (default: all)")
    ap.add_argument("--metrics", default=None, help="comma-separated metric names (default: all installed)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel scoring processes")
    ap.add_argument("--lyra", type=Path, default=LYRA_DIR, help="folder of the Lyra v2 .tflite files")
    ap.add_argument("--rescore", action="store_true", help="score the decoded audio in OUT again")
    args = ap.parse_args(argv)
    if args.rescore:
        rows = rescore(args.out, args.metrics.split(",") if args.metrics else None, args.jobs)
        refs = S.load_list(args.out / "ref" / "reference.scp")
        table = write_table(rows, args.out, [f"{len(refs)} clips, scored again from the decoded audio."])
        (args.out / "anchors.json").write_text(json.dumps(S.json_safe(rows), indent=2) + "\n")
        print(table.read_text())
        return 0
    import torch

    torch.set_num_threads(1)
    metrics = args.metrics.split(",") if args.metrics else None
    sources = (S.load_list(args.testset) if args.testset
               else {p.stem: p for p in default_clips(args.n)})
    refs = prepare_references(sources, args.out / "ref", args.max_seconds or None)
    corpus = corpus_of(sources)
    total = sum(load_audio(p)[0].size for p in refs.values()) / EVAL_RATE
    print(f"{len(refs)} clips, {total:.1f} s -> {args.out}", file=sys.stderr)

    rows: list[dict] = []
    skipped_codecs: list[str] = []
    wanted = {c for c in args.codecs.split(",") if c}
    for anchor in default_anchors(args.lyra):
        if wanted and anchor.name not in wanted:
            continue
        if anchor.missing:
            print(f"skip {anchor.name}: {anchor.missing}", file=sys.stderr)
            skipped_codecs.append(f"{anchor.name} ({anchor.missing})")
            continue
        print(f"{anchor.name} ...", file=sys.stderr)
        decoded, stats = run_anchor(anchor, refs, args.out / anchor.name)
        result = S.score(refs, decoded, metrics, jobs=args.jobs)
        S.write_report(args.out / anchor.name / "score", result, anchor.name)
        rows.append({"codec": anchor.name, "nominal_kbps": anchor.nominal_kbps, **stats,
                     "n": len(result.scored), "metrics": result.summary,
                     "by_corpus": by_corpus(result, corpus)})

    from lrac.cli.common import load_codec
    from lrac.codec import Codec

    codecs = [(Path(m).stem, load_codec(m)) for m in args.model]
    codecs += [(f"{c}-untrained", Codec(c)) for c in args.config]
    for name, codec in codecs:
        print(f"lrac {name} ...", file=sys.stderr)
        kbps = [b / 1000 for b in codec.bitrates_bps]
        runs = S.code_and_score(codec, args.out / "ref" / "reference.scp", args.out / f"lrac-{name}",
                                kbps, metrics, jobs=args.jobs)
        for label, run in runs.items():
            rows.append({"codec": f"lrac {name} {label}", "nominal_kbps": run["bitrate_bps"] / 1000,
                         "bitrate_bps_real": run["bitrate_bps_real"],
                         "rtf": run["encode_rtf"] + run["decode_rtf"], "n": len(run["result"].scored),
                         "metrics": run["result"].summary, "by_corpus": by_corpus(run["result"], corpus)})

    notes = [f"{len(refs)} clips ({total:.1f} s) at 24 kHz: "
             + ", ".join(sorted(refs)[:20]) + (" ..." if len(refs) > 20 else "") + "."]
    if skipped_codecs:
        notes.append("Skipped: " + "; ".join(skipped_codecs) + ".")
    table = write_table(rows, args.out, notes)
    (args.out / "anchors.json").write_text(json.dumps(S.json_safe(rows), indent=2) + "\n")
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

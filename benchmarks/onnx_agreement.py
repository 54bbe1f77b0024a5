"""How closely the exported graphs (lrac-export) follow the PyTorch float32 streaming path.

    python benchmarks/onnx_agreement.py ONNX_DIR [--model t1] [--list exp/lists/test.speech.scp]
                                        [--limit 40] [--bitrates 1000 6000] [--csv FILE]
    python benchmarks/onnx_agreement.py ONNX_DIR --summarize FILE

For each clip and bitrate: the share of token frames (all stages of a frame) that each ONNX variant
(float32, int8 if exported; the float32 graphs in TVM if ``lrac-export --tvm`` compiled them)
encodes as the PyTorch float32 streaming path does, and PESQ-WB / ESTOI of each engine's whole path
(its own tokens, decoded by itself) against the clean clip. Also the largest sample difference when
each variant decodes the PyTorch tokens. The clips are the first ``--limit`` of the list.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from lrac.audio import load_audio
from lrac.cli.common import user_errors
from lrac.codec import PRETRAINED_DIR, Codec
from lrac.eval.metrics import estoi, pesq_wb
from lrac.lists import read_scp
from lrac.runtime import OnnxCodec
from lrac.tvm_engine import TvmCodec, compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx_dir", type=Path)
    parser.add_argument("--model", default="t1", help="the model file or pretrained name that was exported")
    parser.add_argument("--list", default="exp/lists/test.speech.scp")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--bitrates", type=int, nargs="+", default=[1000, 6000])
    parser.add_argument("--csv", type=Path, default=None, help="per-clip rows")
    parser.add_argument("--summarize", type=Path, default=None, metavar="CSV",
                        help="only print the table of the rows an earlier (perhaps stopped) run wrote")
    args = parser.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            rows = [{k: v if k == "clip" else float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        variants = [k[: -len("_pesq_wb")] for k in rows[0] if k.endswith("_pesq_wb") and k != "torch_pesq_wb"]
        args.bitrates = sorted({int(r["bitrate"]) for r in rows})
        args.list = args.summarize
        summarize(rows, args, variants)
        return
    torch.set_num_threads(1)
    path = Path(args.model) if Path(args.model).is_file() else PRETRAINED_DIR / f"{args.model}.pt"
    codec = Codec.load(path, exact=False)
    variants = {v: OnnxCodec(args.onnx_dir, v) for v in OnnxCodec(args.onnx_dir).meta["variants"]}
    if compiled(args.onnx_dir):   # by lrac-export --tvm
        variants["tvm"] = TvmCodec(args.onnx_dir)
    clips = read_scp(args.list)[: args.limit]
    rows = []
    writer = None
    out = open(args.csv, "w", newline="") if args.csv else None   # written as it goes: a long run can stop
    for n, (name, clip_path) in enumerate(clips):
        audio, _ = load_audio(clip_path, codec.sample_rate)
        for bitrate in args.bitrates:
            with torch.inference_mode():
                stream = codec.stream_encoder(bitrate)
                hop4 = 4 * codec.hop_length
                parts = [stream.push(torch.from_numpy(audio[i:i + hop4])) for i in range(0, len(audio), hop4)]
                tokens = torch.cat(parts + [stream.flush()], -1)
                decoded = codec.decode(tokens, length=len(audio))[0, 0].numpy()
            tokens = tokens[0].numpy()
            row = {"clip": name, "bitrate": bitrate, "frames": tokens.shape[1],
                   "torch_pesq_wb": pesq_wb(audio, decoded, codec.sample_rate),
                   "torch_estoi": estoi(audio, decoded, codec.sample_rate)}
            for v, engine in variants.items():
                own_tokens = engine.encode(audio, bitrate)
                own_audio = engine.decode(own_tokens, len(audio))
                row[f"{v}_frames_equal"] = float((own_tokens == tokens).all(0).mean())
                row[f"{v}_max_diff_same_tokens"] = float(np.abs(engine.decode(tokens, len(audio)) - decoded).max())
                row[f"{v}_pesq_wb"] = pesq_wb(audio, own_audio, codec.sample_rate)
                row[f"{v}_estoi"] = estoi(audio, own_audio, codec.sample_rate)
            rows.append(row)
            if out:
                if writer is None:
                    writer = csv.DictWriter(out, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                out.flush()
        print(f"{n + 1}/{len(clips)} {name}", file=sys.stderr)
    if out:
        out.close()
    summarize(rows, args, list(variants))


def summarize(rows: list, args, variants: list) -> None:
    clips = sorted({r["clip"] for r in rows})

    print(f"\n{len(clips)} clips of {args.list}; each engine codes with its own tokens\n")
    print("| bitrate | engine | frames equal to PyTorch | PESQ-WB | ESTOI | ΔPESQ-WB | ΔESTOI | max |Δ| decoding PyTorch's tokens |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for bitrate in args.bitrates:
        sel = [r for r in rows if r["bitrate"] == bitrate]
        frames = sum(r["frames"] for r in sel)
        p0, e0 = np.mean([r["torch_pesq_wb"] for r in sel]), np.mean([r["torch_estoi"] for r in sel])
        print(f"| {bitrate / 1000:g} kbps | PyTorch float32 | - | {p0:.3f} | {e0:.3f} | | | |")
        for v in variants:
            equal = sum(r[f"{v}_frames_equal"] * r["frames"] for r in sel) / frames
            p, e = np.mean([r[f"{v}_pesq_wb"] for r in sel]), np.mean([r[f"{v}_estoi"] for r in sel])
            worst = max(r[f"{v}_max_diff_same_tokens"] for r in sel)
            print(f"| {bitrate / 1000:g} kbps | ONNX {v} | {100 * equal:.2f} % | {p:.3f} | {e:.3f} | "
                  f"{p - p0:+.4f} | {e - e0:+.4f} | {worst:.1e} |")


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

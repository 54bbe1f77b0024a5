"""Encode/decode speed on one thread, one-pass and streaming, and peak memory for a 10-minute file.

    python benchmarks/speed.py [--presets baseline-t1 baseline-t2] [--seconds 10] [--chunk-ms 10]
                               [--memory-minutes 10] [--json FILE]
    python benchmarks/speed.py --engines DIR [DIR ...] [--model t1] [--stream-ms 10 20 40 200] [--seconds 10] [--cpu-time]

The second form streams a model with both engines side by side, in the same process and turn by
turn (the PyTorch float32 streaming path, and the graphs ``lrac-export`` wrote to DIR in onnxruntime:
float32 and, if exported, int8; and, if ``lrac-export --tvm`` compiled them, the float32 graphs in
TVM; several DIRs, e.g. two exports of one model, are named by their folder), per chunk size, encode
and decode separately, and reports the RTF (best of the repeats) and the distribution of the time one
chunk takes (p50 / p99 in ms over every chunk of every repeat): the latency a real-time caller adds.

Real-time factor (RTF) = processing seconds / audio seconds (smaller is faster); "x RT" is 1/RTF.
Models are untrained (weights do not change the cost), loaded as `lrac-encode` loads them: weight norm
folded, exact (float64) send side; `--fast` measures the float32 send side too.
Peak memory is the peak RSS of a fresh process that encodes then decodes a 10-minute file with the
file API (which streams long inputs in 2 s chunks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lrac.cli.common import user_errors
from lrac.codec import Codec
from lrac.config import preset_names


def _codec(preset: str, exact: bool, folder: Path) -> Codec:
    path = folder / f"{preset}.pt"
    if not path.exists():
        Codec(preset).save(path)
    return Codec.load(path, exact=exact)


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_rtf(codec: Codec, seconds: float, chunk_ms: float) -> dict:
    sr = codec.sample_rate
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal(int(seconds * sr)).astype(np.float32) * 0.1)
    codec.decode(codec.encode(audio[:sr], 6000))  # warm-up
    tokens = codec.encode(audio, 6000)
    chunk = int(chunk_ms * sr / 1000)
    frames = max(1, int(round(chunk_ms * codec.frame_rate / 1000)))

    def stream_encode():
        enc = codec.stream_encoder(6000)
        for i in range(0, len(audio), chunk):
            enc.push(audio[i:i + chunk])
        enc.flush()

    def stream_decode():
        dec = codec.stream_decoder()
        for i in range(0, tokens.shape[-1], frames):
            dec.push(tokens[..., i:i + frames])
        dec.flush()

    return {"encode_rtf": _best_of(lambda: codec.encode(audio, 6000)) / seconds,
            "decode_rtf": _best_of(lambda: codec.decode(tokens)) / seconds,
            "stream_encode_rtf": _best_of(stream_encode) / seconds,
            "stream_decode_rtf": _best_of(stream_decode) / seconds}


_MEMORY_SCRIPT = """
import resource, sys, numpy as np, soundfile as sf, torch
torch.set_num_threads(1)
from lrac.codec import Codec
from lrac.compress import encode_file, decode_file
model, minutes, folder = sys.argv[1], float(sys.argv[2]), sys.argv[3]
codec = Codec.load(model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sr = codec.sample_rate
with sf.SoundFile(folder + '/long.wav', 'w', sr, 1, 'PCM_16') as f:
    rng = np.random.default_rng(0)
    for _ in range(int(minutes * 60)):
        f.write((rng.standard_normal(sr) * 0.1).astype(np.float32))
encode_file(codec, folder + '/long.wav', folder + '/long.lrac', 6000)
decode_file(codec, folder + '/long.lrac', folder + '/long_dec.wav')
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base / 1024, peak / 1024)
"""


def measure_memory(model: Path, minutes: float, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(model), str(minutes), str(folder)],
                         check=True, capture_output=True, text=True).stdout.split()
    base, peak = float(out[0]), float(out[1])
    return {"peak_rss_mb": peak, "model_loaded_rss_mb": base}


def _speech(seconds: float, sample_rate: int) -> np.ndarray:
    """The example clip, repeated to ``seconds`` (speech: the pitch path works as on real input)."""
    from lrac.audio import load_audio
    clip, _ = load_audio(Path(__file__).resolve().parents[1] / "examples" / "p238_165.flac", sample_rate)
    return np.tile(clip, int(np.ceil(seconds * sample_rate / len(clip))))[: int(seconds * sample_rate)]


def _engine_streams(model: str, onnx_dirs: list[Path]) -> dict:
    """name -> (make encoder stream, make decoder stream, to engine's tokens, to engine's audio)."""
    from lrac.runtime import OnnxCodec
    from lrac.tvm_engine import TvmCodec, compiled
    path = Path(model) if Path(model).is_file() else Path(__file__).resolve().parents[1] / "lrac" / "pretrained" / f"{model}.pt"
    codec = Codec.load(path, exact=False)
    engines = {"torch": (codec, lambda x: torch.from_numpy(x), lambda t: torch.from_numpy(t)[None])}
    for onnx_dir in onnx_dirs:
        for variant in OnnxCodec(onnx_dir).meta["variants"]:
            name = f"onnx {variant}" + (f" ({onnx_dir.name})" if len(onnx_dirs) > 1 else "")
            engines[name] = (OnnxCodec(onnx_dir, variant), lambda x: x, lambda t: t)
        if compiled(onnx_dir):   # by lrac-export --tvm
            name = "tvm float32" + (f" ({onnx_dir.name})" if len(onnx_dirs) > 1 else "")
            engines[name] = (TvmCodec(onnx_dir), lambda x: x, lambda t: t)
    return engines


def measure_engines(model: str, onnx_dirs: list[Path], seconds: float, stream_ms: list[float], repeats: int,
                    cpu_time: bool = False) -> dict:
    """Per engine and chunk size: streaming RTF and per-chunk latency, encode and decode; in wall
    time, or with ``cpu_time`` in the CPU time of this thread (both engines run on the calling
    thread), which a busy machine's other processes do not inflate."""
    clock = time.thread_time if cpu_time else time.perf_counter
    engines = _engine_streams(model, onnx_dirs)
    codec = engines["torch"][0]
    sr, hop = codec.sample_rate, codec.hop_length
    audio = _speech(seconds, sr)
    tokens = codec.encode(audio, 6000)[0].numpy()
    results: dict = {}
    for ms in stream_ms:
        chunk = int(round(ms * sr / 1000))
        frames = max(1, chunk // hop)
        times: dict = {(name, side): [] for name in engines for side in ("encode", "decode")}
        totals: dict = {key: [] for key in times}
        for _ in range(repeats + 1):            # the first turn warms up and is not counted
            for name, (engine, audio_in, tokens_in) in engines.items():
                for side in ("encode", "decode"):
                    stream = engine.stream_encoder(6000) if side == "encode" else engine.stream_decoder()
                    items = ([audio_in(audio[i:i + chunk]) for i in range(0, len(audio), chunk)] if side == "encode"
                             else [tokens_in(tokens[:, i:i + frames]) for i in range(0, tokens.shape[1], frames)])
                    spent = []
                    with torch.inference_mode():
                        for item in items:
                            start = clock()
                            stream.push(item)
                            spent.append(clock() - start)
                        start = clock()
                        stream.flush()
                        spent.append(clock() - start)
                    times[name, side].append(spent[:-1])
                    totals[name, side].append(sum(spent))
        for (name, side), runs in times.items():
            per_chunk = np.concatenate(runs[1:]) * 1000
            results.setdefault(name, {})[f"{ms:g} ms {side}"] = {
                "rtf": min(totals[name, side][1:]) / seconds,
                "p50_ms": float(np.percentile(per_chunk, 50)), "p99_ms": float(np.percentile(per_chunk, 99))}
        print(f"measured {ms:g} ms chunks", file=sys.stderr)
    return results


def print_engines(results: dict, stream_ms: list[float], seconds: float, cpu_time: bool) -> None:
    clock = "CPU time of the calling thread" if cpu_time else "wall time"
    print(f"\n1 thread, {seconds:g} s of speech streamed at 6 kbps, {clock}; RTF (x real time), and the "
          "time one chunk takes, p50 / p99 ms\n")
    print("| engine | chunk | encode RTF | decode RTF | enc + dec | encode p50 / p99 ms | decode p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for ms in stream_ms:
        for name, r in results.items():
            e, d = r[f"{ms:g} ms encode"], r[f"{ms:g} ms decode"]
            both = e["rtf"] + d["rtf"]
            print(f"| {name} | {ms:g} ms | {e['rtf']:.4f} | {d['rtf']:.4f} | {both:.4f} ({1 / both:.0f}x) | "
                  f"{e['p50_ms']:.2f} / {e['p99_ms']:.2f} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=Path, nargs="+", default=None, metavar="ONNX_DIR",
                        help="compare the engines on the graphs lrac-export wrote to ONNX_DIR (one or more)")
    parser.add_argument("--model", default="t1", help="with --engines: the model file or pretrained name")
    parser.add_argument("--stream-ms", type=float, nargs="+", default=[10, 20, 40, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --engines: time in CPU seconds of the calling thread, not wall seconds "
                             "(for a machine that other processes share)")
    parser.add_argument("--presets", nargs="+", default=[p for p in preset_names()])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=float, default=10.0)
    parser.add_argument("--memory-minutes", type=float, default=10.0, help="0 skips the memory test")
    parser.add_argument("--fast", action="store_true", help="also measure the float32 send side")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.engines:
        results = measure_engines(args.model, args.engines, args.seconds, args.stream_ms, args.repeats,
                                  args.cpu_time)
        print_engines(results, args.stream_ms, args.seconds, args.cpu_time)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for preset in args.presets:
            for exact in ([True, False] if args.fast else [True]):
                name = preset if exact else f"{preset} (float32 send)"
                r = measure_rtf(_codec(preset, exact, folder), args.seconds, args.chunk_ms)
                if args.memory_minutes > 0 and exact:
                    r.update(measure_memory(folder / f"{preset}.pt", args.memory_minutes, folder))
                results[name] = r
                print(f"measured {name}", file=sys.stderr)

    print(f"\n1 thread, {args.seconds:g} s of audio, streaming in {args.chunk_ms:g} ms chunks; "
          "RTF (x real time)\n")
    head = "| model | encode | decode | stream encode | stream decode | peak RSS, 10-min file |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, r in results.items():
        cells = [f"{r[k]:.3f} ({1 / r[k]:.0f}x)" for k in
                 ("encode_rtf", "decode_rtf", "stream_encode_rtf", "stream_decode_rtf")]
        mem = f"{r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {mem} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

"""Encode/decode speed on one thread, one-pass and streaming, and peak memory for a 10-minute file.

    python benchmarks/speed.py [--presets baseline-t1 baseline-t2] [--seconds 10] [--chunk-ms 10]
                               [--memory-minutes 10] [--json FILE]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=[p for p in preset_names()])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=float, default=10.0)
    parser.add_argument("--memory-minutes", type=float, default=10.0, help="0 skips the memory test")
    parser.add_argument("--fast", action="store_true", help="also measure the float32 send side")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

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
    main()

"""Peak memory (RSS) of lrac-encode and lrac-decode for long inputs: 1 minute, 1 hour, 10 hours.

Each input is a silent 16-bit WAV made as a sparse file (a header, then a hole the size of the
samples: no disk space, no time to write), encoded to .lrac and decoded back to a wav, each
command in its own process; the peak RSS is that process's (``wait4``). The decoded wav is
written for real (1.7 GB for 10 hours at 24 kHz) and removed after.

    python benchmarks/memory.py                          # 1 min, 1 h, 10 h at 24 kHz, model t1
    python benchmarks/memory.py --minutes 60 --rate 16000  # 1 h at 16 kHz (resampled on the way in)
    python benchmarks/memory.py --minutes 1,10 --decode-args "--simulate-loss 10 --burst 3"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf


def silent_wav(path: Path, seconds: float, rate: int) -> None:
    """A 16-bit mono WAV of ``seconds`` of silence whose samples are a hole in a sparse file."""
    frames = int(seconds * rate)
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16", format="WAV") as f:
        f.write([0.0])   # a valid header with one sample; the size fields are patched below
    data_bytes = 2 * frames
    with open(path, "r+b") as f:
        head = bytearray(f.read(64))
        at = head.find(b"data")
        head[4:8] = (at + 8 + data_bytes - 8).to_bytes(4, "little")
        head[at + 4:at + 8] = data_bytes.to_bytes(4, "little")
        f.seek(0)
        f.write(head[:at + 8])
    os.truncate(path, at + 8 + data_bytes)


def peak_rss_mb(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; return ``(peak RSS in MB, wall seconds, exit code)``."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode()
    if process.returncode:
        print(stderr.strip(), file=sys.stderr)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,60,600", help="input lengths in minutes, comma-separated")
    parser.add_argument("--rate", type=int, default=24000, help="sample rate of the inputs (Hz)")
    parser.add_argument("--model", default="t1")
    parser.add_argument("--bitrate", default="6")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--decode-args", default="", help="more lrac-decode options, e.g. \"--simulate-loss 10\"")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for minutes in (float(m) for m in args.minutes.split(",")):
            wav, lrac, out = folder / "in.wav", folder / "in.lrac", folder / "out.wav"
            silent_wav(wav, minutes * 60, args.rate)
            common = ["--model", args.model, "--threads", args.threads, "--no-progress"]
            enc = peak_rss_mb([sys.executable, "-m", "lrac.cli.encode", str(wav), str(lrac),
                               "--bitrate", args.bitrate, *common])
            dec = peak_rss_mb([sys.executable, "-m", "lrac.cli.decode", str(lrac), str(out), *common,
                               *args.decode_args.split()]) \
                if enc[2] == 0 else (float("nan"), 0.0, 1)
            rows.append((minutes, enc, dec, lrac.stat().st_size if lrac.exists() else 0))
            for path in (wav, lrac, out):
                path.unlink(missing_ok=True)
            print(f"{minutes:g} min: encode {enc[0]:.0f} MB in {enc[1]:.0f} s, "
                  f"decode {dec[0]:.0f} MB in {dec[1]:.0f} s", flush=True)
    print(f"\nmodel {args.model}, {args.bitrate} kbps, input {args.rate} Hz silent, --threads {args.threads}"
          f"{', decode ' + args.decode_args if args.decode_args else ''}\n")
    print("| input | .lrac size | encode peak RSS | encode time | decode peak RSS | decode time |")
    print("|---|---|---|---|---|---|")
    for minutes, enc, dec, size in rows:
        label = f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"
        print(f"| {label} | {size / 1e6:.2f} MB | {enc[0]:.0f} MB | {enc[1]:.0f} s | {dec[0]:.0f} MB | "
              f"{dec[1]:.0f} s |")


if __name__ == "__main__":
    main()

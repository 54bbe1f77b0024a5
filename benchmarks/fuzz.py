"""Fuzz the decoder with corrupted and crafted .lrac files (tests/lrac_fuzz.py): through the API
(``decode_file``) every case must decode or raise a one-line ``BitstreamError``; through the CLI
(``lrac-decode`` on a folder of them, in a subprocess) every failure must be one ``error:`` line
and the count at the end must match. Prints the outcome per kind and the slowest case.

    python benchmarks/fuzz.py --cases 10000 --model t1
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))   # the case generator is the tests' own

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from lrac.bitstream import BitstreamError  # noqa: E402
from lrac.cli.common import user_errors  # noqa: E402
from lrac.codec import Codec  # noqa: E402
from lrac.compress import decode_file, encode_file  # noqa: E402
from lrac_fuzz import cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--model", default="t1", help="pretrained name or model file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = Codec.pretrained(args.model) if args.model in Codec.pretrained_names() else Codec.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sf.write(folder / "in.wav", 0.1 * np.random.default_rng(0).standard_normal(12000), 24000)
        encode_file(codec, folder / "in.wav", folder / "good.lrac", 6000)
        good = (folder / "good.lrac").read_bytes()
        inputs = folder / "inputs"
        inputs.mkdir()
        outcomes: Counter = Counter()
        other = 0
        slowest = (0.0, "")
        start = time.perf_counter()
        for i, (kind, data) in enumerate(cases(good, codec.model_id, args.cases, args.seed)):
            path = inputs / f"{i:05d}.lrac"
            path.write_bytes(data)
            t0 = time.perf_counter()
            try:
                decode_file(codec, path, folder / "out.wav")
                outcomes[kind, "decoded"] += 1
            except BitstreamError as exc:
                reason = re.sub(r"\d+", "N", str(exc).split(": ", 1)[1].split(" (")[0].split(":")[0])
                outcomes[kind, reason] += 1
                if "\n" in str(exc):
                    other += 1
            except Exception as exc:   # what must never happen
                other += 1
                print(f"case {i} ({kind}): {type(exc).__name__}: {exc}")
            if time.perf_counter() - t0 > slowest[0]:
                slowest = (time.perf_counter() - t0, kind)
        api_s = time.perf_counter() - start
        decoded = sum(n for (_, what), n in outcomes.items() if what == "decoded")
        print(f"API: {args.cases} cases in {api_s:.1f} s; {decoded} decoded (consistent crafted headers), "
              f"{args.cases - decoded - other} BitstreamErrors, {other} anything else; slowest case "
              f"{slowest[0] * 1000:.0f} ms ({slowest[1]})")
        for (kind, what), n in sorted(outcomes.items()):
            print(f"  {kind:15s} {what:45s} {n:6d}")
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "lrac.cli.decode", str(inputs), str(folder / "out"),
                              "--model", args.model], capture_output=True, text=True)
        lines = run.stderr.strip().splitlines()
        bad = [line for line in lines if not line.startswith(("error: ", "note: "))]
        errors = [line for line in lines if line.startswith("error: ")]
        count_ok = errors and errors[-1] == f"error: {args.cases - decoded} of {args.cases} files failed"
        print(f"CLI: exit {run.returncode} in {time.perf_counter() - start:.1f} s; {len(errors) - 1} one-line "
              f"errors, count line {'matches' if count_ok else 'DOES NOT match'}; {len(bad)} other lines"
              + (f", e.g. {bad[0]!r}" if bad else ""))
        if other or bad or not count_ok:
            raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

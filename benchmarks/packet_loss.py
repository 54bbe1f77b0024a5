"""Packet loss: lrac's concealment beside Opus's, on the same clips and the same loss patterns.

Each clip is coded once per system and bitrate, cut into 20 ms packets, and decoded again with
packets lost at 0, 5, 10 and 20 % at random and at 10 and 20 % in Gilbert-Elliott bursts of 3
packets on average (``lrac.packets.loss_pattern``; the seed is fixed per clip and condition, so
every system loses the same packets). Systems:

* lrac (``--model``, repeatable; default t1) at each of its bitrates, with each concealment
  (lrac/conceal.py: ``zero`` = no concealment, ``repeat``, and ``learned`` for a model trained with
  erasures; ``--methods`` to choose);
* Opus 6 kbps (``opusenc --bitrate 6``, 20 ms frames, as benchmarks/anchors.py) decoded by libopus
  with its own concealment where a packet is lost (``opus_decode_float`` with no data and the lost
  packet's duration, what ``opusdec --packet-loss`` calls), on the same patterns; and, for the
  random losses, ``opusdec --packet-loss P`` itself (its own random pattern) as a check.

Scores: PESQ-WB and ESTOI against the clip, PLCMOS v2 (speechmos, offline, no reference). The
delay of each decoder is measured on its lossless output and kept for its lossy ones.

    python benchmarks/packet_loss.py --out runs/packet_loss --clips 40 --model t1 --model exp/m.pt

Rows already in ``OUT/rows.jsonl`` are not computed again, so a new model adds only its own.
Writes ``OUT/packet_loss.md`` (a table per metric: mean over the clips) and ``OUT/packet_loss.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anchors import default_clips, prepare_references
from lrac.audio import load_audio, resample
from lrac.cli.common import user_errors
from lrac.eval import score as S
from lrac.eval.metrics import MetricError, estoi, pesq_wb, plcmos
from lrac.packets import loss_pattern

RATE = 24000
PACKET_MS = 20
# (name, loss %, mean burst in packets; 1: independent losses)
CONDITIONS = [("0 %", 0, 1), ("5 % random", 5, 1), ("10 % random", 10, 1), ("20 % random", 20, 1),
              ("10 % bursty", 10, 3), ("20 % bursty", 20, 3)]
METRICS = {"pesq_wb": "PESQ-WB", "estoi": "ESTOI", "plcmos": "PLCMOS"}


def pattern_seed(clip_index: int, condition_index: int) -> int:
    """The seed of a clip's losses in one condition: the same for every system."""
    return 1000 * clip_index + condition_index


def scores(ref: np.ndarray, deg: np.ndarray, lag: int) -> dict[str, float]:
    r, d = S.align(ref, deg, lag)
    out = {}
    for name, fn in (("pesq_wb", lambda: pesq_wb(r, d, RATE)), ("estoi", lambda: estoi(r, d, RATE)),
                     ("plcmos", lambda: plcmos(d, RATE))):
        try:
            out[name] = fn()
        except MetricError:
            out[name] = math.nan
    return out


# --------------------------------------------------------------------------------------------
# Opus through libopus (its concealment on our loss patterns)
# --------------------------------------------------------------------------------------------


def ogg_packets(data: bytes) -> tuple[list[bytes], int]:
    """The packets of a single-stream Ogg file and its last granule position."""
    packets, current, pos, granule = [], b"", 0, 0
    while pos + 27 <= len(data):
        if data[pos:pos + 4] != b"OggS":
            raise ValueError("not an Ogg stream")
        granule = int.from_bytes(data[pos + 6:pos + 14], "little", signed=True)
        n_segments = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + n_segments]
        body = pos + 27 + n_segments
        for value in lacing:   # a packet ends at the first lacing value below 255
            current += data[body:body + value]
            body += value
            if value < 255:
                packets.append(current)
                current = b""
        pos = body
    return packets, granule


class Libopus:
    """libopus's decoder through ctypes (Debian: libopus0, which opus-tools brings)."""

    RATE = 48000   # as opusdec decodes; resampled to 24 kHz afterwards

    def __init__(self) -> None:
        name = ctypes.util.find_library("opus")
        if name is None:
            raise RuntimeError("libopus not found (apt-get install opus-tools)")
        self.lib = ctypes.CDLL(name)
        self.lib.opus_decoder_create.restype = ctypes.c_void_p
        self.lib.opus_decoder_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        self.lib.opus_decode_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                               ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int]
        self.lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        self.lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]

    def decode(self, ogg: bytes, lost: np.ndarray | None = None) -> np.ndarray:
        """An Ogg Opus file -> mono audio at 24 kHz; packet ``i`` of the audio is concealed where
        ``lost[i]`` (the first packets whatever ``lost`` has beyond them)."""
        packets, granule = ogg_packets(ogg)
        head, audio_packets = packets[0], packets[2:]
        pre_skip = int.from_bytes(head[10:12], "little")
        err = ctypes.c_int()
        decoder = self.lib.opus_decoder_create(self.RATE, 1, ctypes.byref(err))
        if err.value:
            raise RuntimeError(f"opus_decoder_create failed ({err.value})")
        buffer = (ctypes.c_float * 5760)()
        out = []
        try:
            for i, packet in enumerate(audio_packets):
                samples = self.lib.opus_packet_get_nb_samples(packet, len(packet), self.RATE)
                gone = lost is not None and i < len(lost) and lost[i]
                n = (self.lib.opus_decode_float(decoder, None, 0, buffer, samples, 0) if gone else
                     self.lib.opus_decode_float(decoder, packet, len(packet), buffer, 5760, 0))
                if n < 0:
                    raise RuntimeError(f"opus_decode_float failed ({n})")
                out.append(np.ctypeslib.as_array(buffer)[:n].copy())
        finally:
            self.lib.opus_decoder_destroy(decoder)
        audio = np.concatenate(out)[pre_skip:granule]
        return resample(audio, self.RATE, RATE)


def opus_encode(ref: Path, work: Path) -> bytes:
    subprocess.run(["opusenc", "--quiet", "--bitrate", "6", str(ref), str(work / "s.opus")], check=True)
    return (work / "s.opus").read_bytes()


def opusdec_with_loss(work: Path, loss_pct: float) -> np.ndarray:
    subprocess.run(["opusdec", "--quiet", "--rate", str(RATE), "--packet-loss", f"{loss_pct:g}",
                    str(work / "s.opus"), str(work / "out.wav")], check=True)
    return load_audio(work / "out.wav")[0]


# --------------------------------------------------------------------------------------------
# Rows, the cache, the tables
# --------------------------------------------------------------------------------------------


def row_key(row: dict) -> tuple:
    return row["system"], row["bitrate_kbps"], row["method"], row["condition"], row["clip"]


def load_rows(path: Path) -> dict[tuple, dict]:
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row_key(row)] = row
    return rows


def column_name(row: dict) -> str:
    return f"{row['system']} {row['bitrate_kbps']:g} kbps {row['method']}"


def write_tables(rows: list[dict], out: Path, notes: list[str]) -> Path:
    """Tables of the mean of each metric: a row per loss condition, a column per system, bitrate
    and concealment (its 0 % cell: the lossless decode, the same for every concealment)."""
    lossless = {(r["system"], r["bitrate_kbps"], r["clip"]): r for r in rows if r["method"] == "none"}
    columns: dict[str, list[dict]] = {}
    for row in rows:
        if row["method"] != "none":
            columns.setdefault(column_name(row), []).append(row)
    names = sorted(columns, key=lambda c: (c.startswith("Opus"), c))
    summary: dict[str, dict] = {}
    lines = ["# Packet loss: lrac and Opus on the same clips and loss patterns", "",
             *notes, "", "Mean over the clips; 20 ms packets; bursty = Gilbert-Elliott, mean burst 3 packets.", ""]
    for metric, title in METRICS.items():
        lines += [f"## {title}", "", "| loss | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * len(names)]
        for condition, pct, _ in CONDITIONS:
            cells = []
            for name in names:
                if pct == 0:
                    chosen = {(r["system"], r["bitrate_kbps"], r["clip"]) for r in columns[name]}
                    values = [lossless[k][metric] for k in sorted(chosen) if k in lossless]
                else:
                    values = [r[metric] for r in columns[name] if r["condition"] == condition]
                stats = S.mean_ci95(values)
                summary.setdefault(name, {}).setdefault(condition, {})[metric] = stats
                digits = 3 if metric == "estoi" else 2
                cells.append("" if stats["mean"] is None else f"{stats['mean']:.{digits}f}")
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        lines.append("")
    table = out / "packet_loss.md"
    table.write_text("\n".join(lines))
    (out / "packet_loss.json").write_text(json.dumps(S.json_safe(summary), indent=1) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/packet_loss"))
    ap.add_argument("--clips", type=int, default=40, help="clips spread over the shared test split")
    ap.add_argument("--testset", help="folder or list of clips instead (reference.scp style)")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="crop each clip (0: keep whole)")
    ap.add_argument("--model", action="append", default=[], help="lrac model file or pretrained name (default t1)")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="concealments (default: zero, repeat, and learned for a model trained with erasures)")
    ap.add_argument("--bitrates", nargs="+", type=float, default=None, help="lrac bitrates in kbps (default: all)")
    ap.add_argument("--no-opus", action="store_true", help="lrac only")
    args = ap.parse_args(argv)

    import torch

    from lrac.cli.common import load_codec
    from lrac.compress import LossSimulation, decode_with_loss

    torch.set_num_threads(1)
    sources = S.load_list(args.testset) if args.testset else {p.stem: p for p in default_clips(args.clips)}
    refs = prepare_references(sources, args.out / "ref", args.max_seconds or None)
    clips = sorted(refs)
    store = args.out / "rows.jsonl"
    done = load_rows(store)
    total = sum(load_audio(refs[c])[0].size for c in clips) / RATE
    print(f"{len(clips)} clips, {total:.1f} s -> {args.out}", file=sys.stderr)

    def add(row: dict) -> None:
        done[row_key(row)] = row
        with open(store, "a") as f:
            f.write(json.dumps(S.json_safe(row)) + "\n")

    systems = []
    for model in args.model or ["t1"]:
        codec = load_codec(model)
        label = model if model in ("t1", "t2") else f"{Path(model).stem} ({codec.model_id.hex()[:8]})"
        methods = args.methods or (["zero", "repeat"] + (["learned"] if codec.default_concealment == "learned"
                                                         else []))
        systems.append((label, codec, methods))
    opus = None if args.no_opus or shutil.which("opusenc") is None else Libopus()
    if opus is None and not args.no_opus:
        print("skip Opus: opusenc not found (apt-get install opus-tools)", file=sys.stderr)

    start = time.monotonic()
    for k, clip in enumerate(clips):
        ref = load_audio(refs[clip])[0]
        for label, codec, methods in systems:
            for bitrate in codec.bitrates_bps:
                if args.bitrates and bitrate / 1000 not in args.bitrates:
                    continue
                indices = None
                for c, (condition, pct, burst) in enumerate(CONDITIONS):
                    for method in (["none"] if pct == 0 else methods):
                        key = (label, bitrate / 1000, method, condition, clip)
                        if key in done:
                            continue
                        if indices is None:
                            indices = codec.encode(ref, bitrate)[0].numpy()
                        loss = LossSimulation(pct, burst, pattern_seed(k, c), PACKET_MS,
                                              "zero" if method == "none" else method)
                        deg, lost = decode_with_loss(codec, indices, len(ref), loss)
                        add({"system": label, "bitrate_kbps": bitrate / 1000, "method": method,
                             "condition": condition, "clip": clip, "lost": float(lost.mean()),
                             **scores(ref, deg, 0)})   # lrac's output is aligned with its input
        if opus is not None:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                ogg = opus_encode(refs[clip], work)
                lag = S.estimate_delay(ref, opus.decode(ogg), RATE)[0]
                n_packets = len(ogg_packets(ogg)[0]) - 2
                for c, (condition, pct, burst) in enumerate(CONDITIONS):
                    runs = [("libopus PLC" if pct else "none",
                             lambda: opus.decode(ogg, loss_pattern(n_packets, pct, burst, pattern_seed(k, c))))]
                    if pct and burst == 1:
                        runs.append(("opusdec --packet-loss", lambda: opusdec_with_loss(work, pct)))
                    for method, run in runs:
                        key = ("Opus", 6.0, method, condition, clip)
                        if key not in done:
                            add({"system": "Opus", "bitrate_kbps": 6.0, "method": method,
                                 "condition": condition, "clip": clip, **scores(ref, run(), lag)})
        print(f"{k + 1}/{len(clips)} clips, {time.monotonic() - start:.0f} s", file=sys.stderr)

    wanted = {label for label, _, _ in systems} | ({"Opus"} if opus is not None else set())
    rows = [r for r in done.values() if r["system"] in wanted and r["clip"] in refs
            and (not args.bitrates or r["system"] == "Opus" or r["bitrate_kbps"] in args.bitrates)]
    notes = [f"{len(clips)} clips ({total:.1f} s, at most {args.max_seconds:g} s each) spread over the "
             "shared test split" if not args.testset else f"{len(clips)} clips of {args.testset}",
             "lrac `none`: the lossless decode of the same packets; `zero`: no concealment (lost "
             "frames decoded as digital silence); `repeat`: the last latent held 40 ms, faded out over "
             "160 ms; `learned`: the decoder's trained missing latent. Opus `libopus PLC`: the same lost "
             "packets; `opusdec --packet-loss`: opusdec's own random pattern."]
    table = write_tables(rows, args.out, notes)
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

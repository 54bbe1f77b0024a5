"""Research probe (not part of the package): how much a better pitch tracker could give a trained
model, with no retraining. The encoder's causal YIN is replaced, frame by frame, by Praat's
autocorrelation pitch (an offline tracker that looks ahead and smooths with a Viterbi path), and
each clip is coded both ways and scored (docs/results.md, "Bounds"). Needs praat-parselmouth
(`pip install praat-parselmouth`; not a dependency of lrac).

    python benchmarks/oracle_voicing.py t1 --list exp/lists/valid77.scp --mode voicing
    python benchmarks/oracle_voicing.py t2 --list runs/track2-valid/degraded/noisy.scp \
        --targets runs/track2-valid/degraded/target.scp --mode voicing

With ``--targets`` (Track 2) Praat tracks the clean target of each degraded input and the coded
input is scored against that target: what a tracker as good on noisy, reverberant speech as Praat
on clean speech could give.

Modes: ``voicing`` Praat's voicing and pitch; ``add`` only the frames Praat voices and the tracker
does not; ``onset`` those among them in the first 3 frames of a Praat voiced run; ``pitch`` Praat's
pitch where both call the frame voiced. Praat's frame is taken 6.7 ms before the end of ours (the
middle of the tracker's 13.3 ms window). ``late`` needs no Praat: the pitch code holds the voicing
of each 2-frame group's first frame, so an onset on the second frame waits for the next group; this
mode lets the decoder voice that frame, with the tracker's exact pitch (an upper bound on what a
code for such late onsets could give).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from compare import METRICS, code, table   # benchmarks/compare.py: the same scores and table
from lrac.audio import load_audio
from lrac.lists import read_scp
from lrac.cli.common import load_codec, user_errors

MODES = ("voicing", "add", "onset", "pitch", "late")


def praat_pitch(x: np.ndarray, rate: int, hop: int, n_frames: int) -> np.ndarray:
    """Praat's pitch ``[n_frames]`` in Hz at the tracker's frame instants, NaN where unvoiced."""
    import parselmouth
    track = parselmouth.Sound(x.astype(np.float64), sampling_frequency=rate).to_pitch_ac(
        time_step=0.005, pitch_floor=50, pitch_ceiling=500)
    return np.array([track.get_value_at_time((f + 1) * hop / rate - 0.0067) for f in range(n_frames)])


def run_length(voiced: torch.Tensor) -> torch.Tensor:
    """``[B, F]`` bool -> each voiced frame's position in its run (1, 2, ...), 0 when unvoiced."""
    out = torch.zeros_like(voiced, dtype=torch.long)
    for f in range(voiced.shape[-1]):
        out[:, f] = torch.where(voiced[:, f], (out[:, f - 1] if f else 0) + 1, 0)
    return out


def oracle(mode: str, f0: torch.Tensor, v: torch.Tensor, ref_hz: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The tracker's ``(f0, voiced)`` ``[1, F]`` with Praat's put in as ``mode`` says."""
    ref = torch.from_numpy(ref_hz[: f0.shape[-1]])[None].to(f0)
    ref_v = ~torch.isnan(ref)
    if mode == "voicing":
        return torch.where(ref_v, ref, f0), ref_v
    if mode == "pitch":
        return torch.where(ref_v & v, ref, f0), v
    add = ref_v & ~v
    if mode == "onset":
        add &= run_length(ref_v) <= 3
    return torch.where(add, ref, f0), v | add


def patch_late_onsets(codec, switch: dict) -> None:
    """While ``"late" in switch``: a frame of an unvoiced group that the encoder's tracker voiced,
    after an unvoiced frame, is voiced at the decoder with the tracker's pitch (one pass only)."""
    tracker, unpacker = codec.generator.encoder.net.pitch, codec.generator.decoder.net.pitch_unpacker
    seen, own_unpack = {}, unpacker.forward
    tracker.register_forward_hook(lambda m, i, out: seen.update(f0=out[0], voiced=out[2]))

    def unpack(symbols: torch.Tensor):
        f0, v = own_unpack(symbols)
        if "late" not in switch:
            return f0, v
        n = min(f0.shape[-1], seen["f0"].shape[-1])
        before = torch.cat([torch.ones_like(v[:, :1]), v[:, : n - 1]], -1)
        late = (v[:, :n] == 0) & (before == 0) & seen["voiced"][:, :n]
        f0, v = f0.clone(), v.clone()
        f0[:, :n] = torch.where(late, seen["f0"][:, :n].to(f0), f0[:, :n])
        v[:, :n] = torch.where(late, torch.ones_like(v[:, :n]), v[:, :n])
        return f0, v

    unpacker.forward = unpack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model file, checkpoint or pretrained name")
    ap.add_argument("--list", required=True, help="Kaldi-style <id> <path> list")
    ap.add_argument("--mode", choices=MODES, default="voicing")
    ap.add_argument("--targets", default=None, help="clean targets (<id> <path>, same ids): Praat tracks "
                    "them and the scores use them as the reference")
    args = ap.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    tracker = codec.generator.encoder.net.pitch
    own_forward, praat = tracker.forward, {}

    def forward(wav: torch.Tensor):
        f0, dip, v = own_forward(wav)
        if "hz" not in praat:
            return f0, dip, v
        f0, v = oracle(args.mode, f0, v, praat["hz"])
        return f0, dip, v

    tracker.forward = forward
    if args.mode == "late":
        patch_late_onsets(codec, praat)
    rate, hop = codec.sample_rate, codec.generator.encoder.hop_length
    bitrates = [1000, 6000]
    scores = {use: {b: {m: [] for m in METRICS} for b in bitrates} for use in (False, True)}
    clips = read_scp(args.list)
    targets = dict(read_scp(args.targets)) if args.targets else {}
    for i, (clip_id, path) in enumerate(clips):
        x = load_audio(path, rate, warn_stereo=False)[0]
        ref = load_audio(targets[clip_id], rate, warn_stereo=False)[0] if targets else x
        hz = None if args.mode == "late" else praat_pitch(ref, rate, hop, len(x) // hop + 1)
        for use in (False, True):
            praat.clear()
            if use:
                praat["late" if args.mode == "late" else "hz"] = hz
            for bitrate in bitrates:
                decoded = code(codec, x, bitrate, 0.0)
                for name, metric in METRICS.items():
                    scores[use][bitrate][name].append(metric(ref, decoded, rate))
        print(f"\r{i + 1}/{len(clips)}", end="", flush=True)
    arrays = [{b: {m: np.array(v) for m, v in scores[use][b].items()} for b in bitrates} for use in (False, True)]
    against = f", scored against {args.targets}" if targets else ""
    print(f"\n{len(clips)} clips of {args.list}{against}: the tracker, then with the oracle (mode {args.mode})")
    print(table(["tracker", f"oracle {args.mode}"], arrays, bitrates))

if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

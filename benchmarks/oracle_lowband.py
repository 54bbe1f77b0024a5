"""What a low-band code is worth: t1's 6 kbps output with its low band replaced.

For each validation clip, t1 codes the clip at 6 kbps; then the band below ``--max-hz`` (500 Hz, the
low-band code's) of its output (per 20 ms frame of the codec's own framing, in voiced frames) is
replaced by:

* ``reference``: the reference's waveform below it (a zero-phase brick wall, every frame);
* ``harmonics``: the harmonics below it fitted to the reference by least squares at the pitch
  the decoder uses (``lrac.models.lowband``'s fit), unquantised; ``harmonics-3``: only the first three;
* ``amp-3dB`` / ``phase-3bit`` / ``phase-4bit``: those harmonics with amplitudes in 3 dB steps or
  phases in 3 / 4 bits;
* ``phase-continued``: amplitudes as fitted, phases carried from a voiced run's first frame by the
  pitch alone (a pulse train's harmonics, in level);
* ``bits-N`` (``--bits N ...``): the harmonics below ``--max-hz`` in N bits a frame, as a variable
  layout would give them (:func:`in_bits`): a 5-bit level in 3 dB steps, then harmonic by harmonic
  3 amplitude bits (6 dB steps, down to 42 dB below the level) and a phase of 4 bits for the first
  two, 3 for the rest, while the bits last; bits left over refine the phases a bit each per round
  from the first harmonic up (to 6 bits), then the amplitudes (3 dB steps); the harmonics left
  without bits keep the band the decoder gives without a low-band code (its 4 latent stages);
* ``code``: the shipped 20-bit low-band code of :mod:`lrac.models.lowband` (first three harmonics),
  with the latent's 6 stages (``code``) or the 4 that leave it room (``code-4-stages``).
* ``upper-own`` / ``upper-amp`` / ``upper-phase`` / ``upper-both``: the harmonics below
  ``--max-hz`` fitted to the decoded output, from 500 Hz up with the reference's amplitudes, its
  phases, or both (``upper-own``: neither, the reference for the other three).

It also prints how far t1's harmonics' levels are from the reference's, below 500 Hz (the code's
band) and from there to ``--max-hz``.

    python benchmarks/oracle_lowband.py --list exp/lists/valid77.scp --max 20
    python benchmarks/oracle_lowband.py --list exp/lists/valid25.scp --max 25 --max-hz 1000
    python benchmarks/oracle_lowband.py --list exp/lists/valid25.scp --max 25 --max-hz 1000 \
        --variants none code harmonics --bits 20 26 30 36 44
    python benchmarks/oracle_lowband.py --list exp/lists/valid25.scp --max 25 --max-hz 1000 \
        --variants none upper-own upper-amp upper-phase upper-both
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from lrac import Codec
from lrac.audio import load_audio
from lrac.cli.common import load_codec, user_errors
from lrac.eval.metrics import estoi, pesq_wb
from lrac.lists import read_scp
from lrac.models.frame import sqrt_hann
from lrac.models.lowband import MAX_HZ, LowBandDecoder, LowBandEncoder

N, HOP, SR = 480, 240, 24000
WINDOW = sqrt_hann(N).double().numpy()
VARIANTS = ["none", "reference", "harmonics", "harmonics-3", "amp-3dB", "phase-3bit", "phase-4bit",
            "phase-continued", "code", "code-4-stages", "upper-own", "upper-amp", "upper-phase", "upper-both"]
CODE_HZ = 500.0   # the upper-* variants keep the decoder's own harmonics below this (the code's band)


def frames_of(x: np.ndarray) -> np.ndarray:
    """``[T]`` -> the codec's frames ``[T // HOP, N]`` (frame f ends at (f + 1) * HOP)."""
    xp = np.concatenate([np.zeros(N - HOP), x])
    return np.lib.stride_tricks.sliding_window_view(xp, N)[::HOP][: len(x) // HOP]


def overlap_add(frames: np.ndarray, length: int) -> np.ndarray:
    y = np.zeros((len(frames) + 1) * HOP)
    for i, f in enumerate(frames):
        y[i * HOP: i * HOP + N] += f
    return y[N - HOP: N - HOP + length]


def lowpass(x: np.ndarray, max_hz: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / SR) >= max_hz] = 0
    return np.fft.irfft(spec, len(x))


def fit(frame: np.ndarray, f0: float, harmonics: int, max_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares under the Hann window: ``(amplitude, phase)`` of harmonics below ``max_hz`` at the
    frame's end, and the basis ``[N, 2H]``."""
    h = np.arange(1, harmonics + 1)
    h = h[h * f0 < max_hz]
    angle = 2 * np.pi * np.outer(np.arange(-N, 0), h) * f0 / SR
    basis = np.concatenate([np.cos(angle), np.sin(angle)], 1)
    w = WINDOW[:, None]
    coef = np.linalg.lstsq(basis * w, frame * WINDOW, rcond=None)[0]
    c = coef[: len(h)] - 1j * coef[len(h):]
    return c, basis


def synth(c: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return basis @ np.concatenate([c.real, -c.imag]) * WINDOW ** 2


def replaced(y: np.ndarray, lb_frames: dict[int, np.ndarray], cut_hz: dict[int, float]) -> np.ndarray:
    """``y`` with each listed frame's band below ``cut_hz`` replaced by ``lb_frames`` (Hann-windowed)."""
    spec = np.fft.rfft(frames_of(y) * WINDOW, axis=1)
    freqs = np.fft.rfftfreq(N, 1 / SR)
    out = np.fft.irfft(spec, N, axis=1) * WINDOW
    for f, frame in lb_frames.items():
        s = spec[f].copy()
        s[freqs < cut_hz[f]] = 0
        out[f] = np.fft.irfft(s, N) * WINDOW + frame
    return overlap_add(out, len(y))


def variant(name: str, x: np.ndarray, y: np.ndarray, f0: np.ndarray, voiced: np.ndarray, max_hz: float
            ) -> np.ndarray:
    if name == "reference":
        return y - lowpass(y, max_hz) + lowpass(x, max_hz)
    harmonics = 3 if name == "harmonics-3" else 99
    lb, cut, prev = {}, {}, {}
    decoded = frames_of(y)
    for f, frame in enumerate(frames_of(x)):
        if not voiced[f] or f0[f] >= max_hz:
            prev = {}
            continue
        c, basis = fit(frame, f0[f], harmonics, max_hz)
        if name.startswith("upper-"):   # the decoder's harmonics below CODE_HZ, the reference's part above
            own = fit(decoded[f], f0[f], harmonics, max_hz)[0]
            upper = above_code(len(c), f0[f])
            mixed = {"upper-own": own, "upper-amp": np.abs(c) * np.exp(1j * np.angle(own)),
                     "upper-phase": np.abs(own) * np.exp(1j * np.angle(c)), "upper-both": c}[name]
            c = np.where(upper, mixed, own)
        if name.startswith("bits-"):
            c = in_bits(c, int(name[5:]))
            if not len(c):
                continue
            h = len(basis[0]) // 2
            basis = basis[:, list(range(len(c))) + list(range(h, h + len(c)))]
        amp, phase = np.abs(c), np.angle(c)
        if name == "amp-3dB":
            amp = 10 ** (3 * np.round(20 * np.log10(amp + 1e-12) / 3) / 20)
        if name.startswith("phase-") and name.endswith("bit"):
            step = 2 * np.pi / (1 << int(name[6]))
            phase = step * np.round(phase / step)
        if name == "phase-continued":
            advance = 2 * np.pi * f0[f] * HOP / SR
            phase = np.array([prev[k] + (k + 1) * advance if k in prev else p for k, p in enumerate(phase)])
            prev = dict(enumerate(phase))
        lb[f], cut[f] = synth(amp * np.exp(1j * phase), basis), (len(c) + 0.5) * f0[f]
    return replaced(y, lb, cut)


def above_code(n: int, f0: float) -> np.ndarray:
    """Which of harmonics ``1..n`` of ``f0`` lie at or above ``CODE_HZ`` (``[n]`` bool)."""
    return np.arange(1, n + 1) * f0 >= CODE_HZ


def level_errors(x: np.ndarray, y: np.ndarray, f0: np.ndarray, voiced: np.ndarray, max_hz: float
                 ) -> tuple[list[float], list[float]]:
    """The decoded harmonics' levels less the reference's (dB), each fitted at the decoded pitch in
    voiced frames, for the harmonics within 30 dB of the frame's strongest: ``(below CODE_HZ, from
    CODE_HZ to max_hz)``."""
    below: list[float] = []
    above: list[float] = []
    for f, (fx, fy) in enumerate(zip(frames_of(x), frames_of(y))):
        if not voiced[f] or f0[f] >= max_hz:
            continue
        ref_db = 20 * np.log10(np.abs(fit(fx, f0[f], 99, max_hz)[0]) + 1e-9)
        out_db = 20 * np.log10(np.abs(fit(fy, f0[f], 99, max_hz)[0]) + 1e-9)
        strong = ref_db > ref_db.max() - 30
        upper = above_code(len(ref_db), f0[f])
        below += list((out_db - ref_db)[strong & ~upper])
        above += list((out_db - ref_db)[strong & upper])
    return below, above


def in_bits(c: np.ndarray, bits: int) -> np.ndarray:
    """The harmonics ``c`` [H] (complex, from :func:`fit`) as ``bits`` bits rebuild them (the
    ``bits-N`` variant's layout); the harmonics that get no bits are left out."""
    amp, phase = np.abs(c), np.angle(c)
    db = 20 * np.log10(amp + 1e-12)
    level = 3 * np.round(db.max() / 3)
    left = bits - 5
    amp_bits, phase_bits = [], []
    for h in range(len(c)):
        a, p = 3, (4 if h < 2 else 3)
        if left < a + p:
            break
        amp_bits.append(a)
        phase_bits.append(p)
        left -= a + p
    for bits_of, most in ((phase_bits, 6), (amp_bits, 4)):      # a bit each per round, lowest first
        while left and min(bits_of, default=most) < most:
            for h in range(len(bits_of)):
                if left and bits_of[h] < most:
                    bits_of[h] += 1
                    left -= 1
    out = []
    for h, (a, p) in enumerate(zip(amp_bits, phase_bits)):
        step_db = 6.0 if a == 3 else 3.0
        steps = np.clip(np.round((db[h] - level) / step_db), -(2 ** a - 1), 0)
        step = 2 * np.pi / (1 << p)
        out.append(10 ** ((level + steps * step_db) / 20) * np.exp(1j * step * np.round(phase[h] / step)))
    return np.array(out, dtype=complex)


def code_variant(codec: Codec, x: np.ndarray, y: np.ndarray, f0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """The shipped 20-bit code (lrac.models.lowband) on ``y``'s low band, at the decoded pitch."""
    lowband = codec.config.model.frame.lowband
    layout = lowband.layout if lowband else "adaptive"     # a model without one: today's layout
    enc = LowBandEncoder(N, HOP, SR, 3, layout, sqrt_hann(N).double())
    dec = LowBandDecoder(N, HOP, SR, 3, layout, sqrt_hann(N).double())
    f0_t, v_t = torch.from_numpy(f0)[None].double(), torch.from_numpy(voiced.astype(np.float64))[None]
    codes = enc.codes(torch.from_numpy(frames_of(x))[None].double(), f0_t, v_t)      # [1, F]
    frames, keep = dec.synthesize(codes, f0_t)
    has = (codes[0] > 0).numpy()
    lb = {f: frames[0, f].numpy() for f in np.flatnonzero(has)}
    cut = {f: float(np.fft.rfftfreq(N, 1 / SR)[int((keep[0, :, f] == 0).sum())]) for f in lb}
    return replaced(y, lb, cut)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="t1")
    parser.add_argument("--list", default="exp/lists/valid77.scp")
    parser.add_argument("--max", type=int, default=20, help="clips, spread over the list (seed 0)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--max-hz", type=float, default=MAX_HZ,
                        help="the band replaced (all but the code variants); default: the code's")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--bits", nargs="*", type=int, default=[],
                        help="the bits-N variants: the harmonics in N bits a frame")
    args = parser.parse_args(argv)
    if any(n < 5 for n in args.bits):
        parser.error(f"--bits: each N must be at least 5 (the level alone takes 5), got {args.bits}")
    variants = args.variants + [f"bits-{n}" for n in args.bits]
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    clips = read_scp(args.list)
    pick = np.random.default_rng(0).choice(len(clips), min(args.max, len(clips)), replace=False)
    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    errors: tuple[list[float], list[float]] = ([], [])
    for i, k in enumerate(pick):
        x, _ = load_audio(clips[k][1], SR, warn_stereo=False)
        x = x[: min(len(x), int(args.seconds * SR)) // HOP * HOP].astype(np.float64)
        tokens = codec.encode(x.astype(np.float32), 6000)
        with torch.inference_mode():
            pitch = codec.layout.unpack(tokens)["pitch"]
            f0, voicing = codec.decoder.net.pitch_unpacker(pitch)
            # (4 stages is no bitrate of t1: its decoder is run directly)
            outs = {n_q: codec._synthesize(tokens[:, :n_q])[0, 0, :len(x)].double().numpy() for n_q in (6, 4)}
        f0, voiced = f0[0].double().numpy(), voicing[0].numpy() > 0
        for total, part in zip(errors, level_errors(x, outs[6], f0, voiced, args.max_hz)):
            total += part
        for name in variants:
            if name == "none":
                z = outs[6]
            elif name.startswith("code"):
                z = code_variant(codec, x, outs[4 if name == "code-4-stages" else 6], f0, voiced)
            else:   # bits-N: the harmonics it leaves without bits keep the decoder's band without a code
                z = variant(name, x, outs[4 if name.startswith("bits-") else 6], f0, voiced, args.max_hz)
            scores[name].append((pesq_wb(x, z, SR), estoi(x, z, SR)))
        print(f"\r{i + 1}/{len(pick)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{'t1 6 kbps, low band replaced by':34s} PESQ-WB  ESTOI   ({len(pick)} clips of {args.list})")
    for name, rows in scores.items():
        a = np.array(rows)
        print(f"{name:34s} {a[:, 0].mean():.3f}    {a[:, 1].mean():.3f}")
    below, above = (np.abs(e) for e in errors)
    print(f"t1's harmonics' level error, mean |dB| (within 30 dB of each frame's strongest): below "
          f"{CODE_HZ:.0f} Hz {below.mean():.2f} ({len(below)}), {CODE_HZ:.0f}-{args.max_hz:.0f} Hz "
          f"{above.mean() if len(above) else float('nan'):.2f} ({len(above)})")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

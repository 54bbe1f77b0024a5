"""Training throughput on CPU: audio-seconds trained per wall-second, per preset and training mode.

One sample is one full iteration (generator step, then discriminator step) on a batch of
``--batch`` x 2.6 s chunks; the figure is the median over ``--iters`` samples after ``--warmup``
ones (the first includes the k-means initialisation). Modes are run interleaved, round by round, so
that load from other processes affects them alike. The process CPU time per iteration is recorded
too: with ``--threads 1`` it measures the work done and hardly depends on other load, which makes
it the robust figure for comparing modes on a shared machine.

Modes:

* ``espnet-order``: the same losses computed as ESPnet's ``gan_codec`` trainer does (four
  discriminator forwards with ESPnet's layout: NCHW, out-of-place activations, weight norm
  recomputed per call; a full backward in the generator turn including unused discriminator weight
  gradients; every mel spectrogram computed twice for the L1 and the MSE terms; autograd's L1 for
  feature matching). Same results as ``lrac``, kept here only as the reference for the speed-up.
  (The SEANet layers run lrac's faster training kernels in both modes: tests/test_conv.py checks
  that they compute what torch's own layers do.)
* ``lrac``: :meth:`lrac.train.gan.GanStep.train_step`, the default (same results, less work).
* ``recon-only``: no discriminator (``train.warmup_steps`` reconstruction warm-up: mel + commitment).
* ``recon-bf16``: ``recon-only`` with the networks in bfloat16 autocast (``train.bf16``).
* ``disc-3-scales``: discriminator with 3 of the 5 STFT scales (128, 512, 2048).

Usage::

    python benchmarks/train_speed.py [--presets baseline-t1 baseline-t2] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import torch.nn.functional as F

from lrac.cli.common import user_errors
from lrac.config import load_config
from lrac.train.data import ChunkStream, Utterance
from lrac.train.gan import GanStep
from lrac.train.losses import discriminator_adversarial_loss, generator_adversarial_loss
from lrac.train.trainer import Trainer

SEGMENT = 62400
EXTRA_SETTINGS: list[str] = []   # --set, for every preset and mode
MODES = {  # mode -> (config overrides, steps per sample)
    "espnet-order": ([], 1),
    "lrac": (["train.warmup_steps=0"], 1),   # (the t1 / t2 presets train without the GAN)
    "recon-only": (["train.warmup_steps=1000000000"], 1),
    "recon-bf16": (["train.warmup_steps=1000000000", "train.bf16=true"], 1),
    "disc-3-scales": (["train.warmup_steps=0", "train.disc_n_ffts=[128, 512, 2048]"], 1),
}


def plain_discriminator(disc: torch.nn.Module, x: torch.Tensor) -> list[list[torch.Tensor]]:
    """The MS-STFT discriminator as ESPnet/EnCodec run it, with the same weights: ``[B, 2, F, T]``
    spectrogram transposed to ``[B, 2, T, F]`` (NCHW), out-of-place LeakyReLU, each weight-normed
    weight recomputed at every call."""
    outs = []
    for scale in disc.discriminators:
        spec = torch.stft(x.reshape(-1, x.shape[-1]), scale.n_fft, scale.hop, scale.n_fft, window=scale.window,
                          center=False, return_complex=True)[:, None] * scale.scale
        z = torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)
        feats = []
        for conv in scale.convs:
            z = F.leaky_relu(F.conv2d(z, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation), 0.1)
            feats.append(z)
        post = scale.conv_post
        feats.append(F.conv2d(z, post.weight, post.bias, post.stride, post.padding, post.dilation))
        outs.append(feats)
    return outs


def plain_feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([sum(F.l1_loss(a, b.detach()) for a, b in zip(sf, sr)) for sf, sr in zip(fake, real)]).mean()


def espnet_order_step(tr: GanStep, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
    """One iteration computed the way ESPnet's GAN trainer does it (reference for the speed-up)."""
    tc = tr.tc
    # generator turn
    y_hat, commit = tr.generator(x, tr.stages_at(step))
    mel = 0.0
    mel_loss = tr.valid_mel
    for n_fft, alpha in zip(mel_loss.n_ffts, mel_loss.alphas):
        l1 = (mel_loss.log_mel(y_hat, n_fft) - mel_loss.log_mel(y, n_fft)).abs().mean()
        l2 = (mel_loss.log_mel(y_hat, n_fft) - mel_loss.log_mel(y, n_fft)).pow(2).mean()
        mel = mel + l1 + alpha * l2
    mel = mel / mel_loss.total
    fake = plain_discriminator(tr.disc, y_hat)
    with torch.no_grad():
        real = plain_discriminator(tr.disc, y)
    g_loss = (tc.lambda_mel * mel + tc.lambda_commit * commit + tc.lambda_adv * generator_adversarial_loss(fake)
              + tc.lambda_feat * plain_feature_matching(fake, real))
    tr.opt_g.zero_grad()
    tr.opt_d.zero_grad()
    g_loss.backward()
    tr.opt_g.step()
    # discriminator turn, on the cached generator output
    fake = plain_discriminator(tr.disc, y_hat.detach())
    real = plain_discriminator(tr.disc, y)
    real_loss, fake_loss = discriminator_adversarial_loss(real, fake)
    tr.opt_d.zero_grad()
    (real_loss + fake_loss).backward()
    tr.opt_d.step()


def make_trainer(preset: str, overrides: list[str], batch: int, out: Path) -> Trainer:
    cfg = load_config(preset, [f"train.batch_size={batch}", f"train.segment_samples={SEGMENT}",
                               *overrides, *EXTRA_SETTINGS])
    dummy = ChunkStream([Utterance("unused", "unused", SEGMENT)], SEGMENT, buffer_size=1)
    return Trainer(cfg, out, dummy, None, progress=False)


def measure(presets: list[str], modes: list[str], batch: int, iters: int, warmup: int
            ) -> dict[str, dict]:
    """Run the modes interleaved; returns ``{preset: {mode: [(wall s, cpu s) per iteration, ...]}}``."""
    results: dict[str, dict] = {}
    with TemporaryDirectory() as tmp:
        for preset in presets:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 1, SEGMENT, generator=gen) * 0.1
            trainers = {m: make_trainer(preset, MODES[m][0], batch, Path(tmp) / m) for m in modes}
            times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
            for round_ in range(warmup + iters):
                for mode in modes:
                    tr, steps = trainers[mode], MODES[mode][1]
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(steps):
                        if mode == "espnet-order":
                            espnet_order_step(tr.gan, x, x, tr.step)
                        else:
                            tr.gan.train_step(x, x, tr.step)
                        tr.step += 1
                        tr.gan.after_step(tr.step)
                    if round_ >= warmup:
                        times[mode].append(((time.perf_counter() - t0) / steps,
                                            (time.process_time() - c0) / steps))
                print(f"{preset} round {round_ + 1}/{warmup + iters}: "
                      + ", ".join(f"{m} {times[m][-1][0]:.2f} s (cpu {times[m][-1][1]:.2f} s)"
                                  for m in modes if times[m]), flush=True)
            results[preset] = times
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["baseline-t1", "baseline-t2"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="Write the table as JSON here.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A config setting for every preset and mode (repeatable).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    audio_s = args.batch * SEGMENT / 24000
    EXTRA_SETTINGS.extend(args.set)
    raw = measure(args.presets, args.modes, args.batch, args.iters, args.warmup)

    table: dict[str, dict] = {}
    print(f"\nbatch {args.batch} x {SEGMENT / 24000:.1f} s, {args.threads} thread(s), torch "
          f"{torch.__version__}, median of {args.iters}")
    print(f"{'preset':<13} {'mode':<14} {'s/iter':>7} {'audio-s/s':>10} {'cpu s/iter':>11} "
          f"{'speed-up (wall, cpu)':>21}")
    for preset, times in raw.items():
        wall = {m: statistics.median(t[0] for t in ts) for m, ts in times.items()}
        cpu = {m: statistics.median(t[1] for t in ts) for m, ts in times.items()}
        ref = "espnet-order" if "espnet-order" in wall else None
        entry: dict = {"batch": args.batch, "segment_s": SEGMENT / 24000, "threads": args.threads,
                       "modes": {}}
        for mode in wall:
            row = {"s_per_iter": round(wall[mode], 3), "audio_s_per_s": round(audio_s / wall[mode], 3),
                   "cpu_s_per_iter": round(cpu[mode], 3),
                   "samples_wall_s": [round(t[0], 3) for t in times[mode]]}
            speed = "-"
            if ref:
                row["speedup_vs_espnet_order"] = round(wall[ref] / wall[mode], 2)
                row["cpu_speedup_vs_espnet_order"] = round(cpu[ref] / cpu[mode], 2)
                speed = f"{row['speedup_vs_espnet_order']:.2f}x, {row['cpu_speedup_vs_espnet_order']:.2f}x"
            entry["modes"][mode] = row
            print(f"{preset:<13} {mode:<14} {wall[mode]:7.2f} {audio_s / wall[mode]:10.2f} "
                  f"{cpu[mode]:11.2f} {speed:>21}")
        main_mode = "lrac" if "lrac" in wall else next(iter(wall))
        for key in ("audio_s_per_s", "s_per_iter", "speedup_vs_espnet_order", "cpu_speedup_vs_espnet_order"):
            if key in entry["modes"][main_mode]:
                entry[key] = entry["modes"][main_mode][key]
        table[preset] = entry
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(user_errors(main)())   # a bad argument or file: one line, exit 2

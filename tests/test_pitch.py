"""The pitch path (lrac/models/pitch.py): YIN targets, the harmonic source, the decoder and trainer
plumbing. Streaming == one pass for a decoder with the pitch path is covered in test_frame.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrac.codec import Codec
from lrac.config import load_config
from lrac.models.frame import CausalSTFT, sqrt_hann
from lrac.models.pitch import HarmonicSource, estimate_pitch, f0_from_logit, pitch_loss
from lrac.models.streaming import StreamSession

torch.set_num_threads(1)
SR, HOP = 24000, 240


def _gliding_tone(f0_hz: torch.Tensor) -> torch.Tensor:
    """Per-sample pitch ``[T]`` -> a 12-harmonic tone with 1/k amplitudes, ``[1, 1, T]``."""
    cycles = torch.cumsum(f0_hz.double() / SR, 0)
    tone = sum(torch.sin(2 * math.pi * k * cycles) / k for k in range(1, 13))
    return (0.2 * tone).float()[None, None]


def test_yin_follows_a_gliding_tone() -> None:
    t = torch.arange(SR) / SR
    truth = 110 + 60 * t                                   # 110 -> 170 Hz over a second
    f0, voiced = estimate_pitch(_gliding_tone(truth), SR, HOP)
    assert f0.shape == voiced.shape == (1, SR // HOP)
    inner = slice(3, -3)                                   # edges see zero padding
    assert voiced[0, inner].all()
    at_frames = truth[HOP - 1::HOP]
    cents = 1200 * torch.log2(f0[0, inner] / at_frames[inner]).abs()
    assert cents.median() < 15 and cents.max() < 60, cents


def test_yin_calls_noise_and_silence_unvoiced() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(1, 1, SR, generator=gen)
    silence = torch.zeros(1, 1, SR)
    _, voiced_noise = estimate_pitch(noise, SR, HOP)
    f0_silence, voiced_silence = estimate_pitch(silence, SR, HOP)
    assert voiced_noise.float().mean() < 0.05
    assert not voiced_silence.any() and torch.isfinite(f0_silence).all()


def test_yin_on_less_than_a_frame_is_empty() -> None:
    f0, voiced = estimate_pitch(torch.zeros(2, 1, HOP - 1), SR, HOP)
    assert f0.shape == voiced.shape == (2, 0)


def test_unvoiced_frames_carry_the_last_pitch() -> None:
    tone = _gliding_tone(torch.full((SR // 2,), 200.0))
    wav = torch.cat([tone, torch.zeros(1, 1, SR // 2)], -1)
    f0, voiced = estimate_pitch(wav, SR, HOP)
    assert voiced[0, 10:40].all() and not voiced[0, 60:].any()
    assert torch.allclose(f0[0, 60:], torch.full((40,), 200.0), rtol=0.02)


def test_pitch_loss_is_zero_at_the_target_and_counts_octaves() -> None:
    f0 = torch.tensor([[100.0, 200.0, 300.0]])
    voiced = torch.tensor([[True, True, False]])
    f0_logit = torch.logit(torch.log(f0 / 50) / math.log(10))    # inverse of f0_from_logit
    assert torch.allclose(f0_from_logit(f0_logit), f0)
    logits = torch.stack([f0_logit, torch.tensor([[20.0, 20.0, -20.0]])], 1)
    err, bce = pitch_loss(logits, f0, voiced)
    assert err.item() == pytest.approx(0.0, abs=1e-5) and bce.item() < 1e-6
    err, _ = pitch_loss(logits, f0 / 2, voiced)                   # an octave off (voiced frames only)
    assert err.item() == pytest.approx(1.0, abs=1e-4)


def _source() -> HarmonicSource:
    return HarmonicSource(SR, HOP, sqrt_hann(2 * HOP))


@pytest.mark.parametrize("f0", [90.0, 200.0, 400.0])
def test_source_puts_harmonics_below_nyquist_at_unit_power(f0: float) -> None:
    frames = 40
    wav = _source()(torch.full((1, frames), f0), torch.ones(1, frames))
    power = CausalSTFT(2 * HOP, HOP)(wav).abs()[0, :, 5:].pow(2).mean(-1)   # [bins], 50 Hz each
    assert power.mean().item() == pytest.approx(1.0, rel=0.1)                # like unit phasors
    if f0 == 200.0:                                                          # peaks on the harmonics
        harmonics, between = power[4::4][:-1], power[2::4]                   # 200, 400, ...; 100, 300, ...
        assert harmonics.min() > 10 * between.max()
    silent = _source()(torch.full((1, frames), f0), torch.zeros(1, frames))
    assert silent.abs().max() == 0


def test_source_streams_with_a_continuous_phase() -> None:
    gen = torch.Generator().manual_seed(3)
    f0 = 80 + 300 * torch.rand(2, 30, generator=gen)
    voicing = (torch.rand(2, 30, generator=gen) > 0.3).float()
    source = _source()
    whole = source(f0, voicing)
    session = StreamSession(source, batch_size=2)
    parts = [session(f0[:, a:b], voicing[:, a:b]) for a, b in ((0, 1), (1, 8), (8, 8), (8, 30))]
    assert (torch.cat(parts, -1) - whole).abs().max() < 1e-5


def _pitch_codec(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    return Codec(load_config("lrac-t1", ["model.frame.harmonic=true"]))


def test_decoder_pitch_path_plumbing() -> None:
    codec = _pitch_codec()
    net = codec.decoder.net
    latent = torch.randn(1, codec.decoder.latent_dim, 20)
    frames = latent.shape[-1]
    wav, logits = codec.decoder.synthesize(latent)
    assert wav.shape == (1, 1, frames * HOP) and logits.shape == (1, 2, frames)
    assert torch.equal(codec.decoder(latent), wav)
    bins = net.istft.n_fft // 2 + 1
    log_mag, phase, _, _ = net.backbone(latent).split([bins, bins, bins, 2], dim=1)
    aperiodic_only = net.istft(torch.cat([log_mag, phase], 1))     # unvoiced: the aperiodic part alone
    unvoiced = codec.decoder.synthesize(latent, (torch.full((1, frames), 150.0), torch.zeros(1, frames)))[0]
    assert torch.allclose(unvoiced, aperiodic_only, atol=1e-6)
    voiced = codec.decoder.synthesize(latent, (torch.full((1, frames), 150.0), torch.ones(1, frames)))[0]
    assert (voiced - aperiodic_only).abs().max() > 1e-4


def test_pitch_model_trains_its_pitch_head(tmp_path) -> None:
    """The trainer adds the pitch losses, and a few steps on one clip lower the f0 error."""
    from lrac.train.data import ChunkStream, Utterance
    from lrac.train.trainer import Trainer
    import soundfile as sf

    t = np.arange(SR) / SR
    tone = _gliding_tone(torch.from_numpy(80 + 20 * t))[0, 0].numpy()   # far from the head's start (158 Hz)
    sf.write(tmp_path / "tone.wav", tone, SR)
    cfg = load_config("lrac-t1", ["model.frame.harmonic=true", "train.segment_samples=9600",
                                  "train.batch_size=2", "train.lr=2e-3", "train.warmup_steps=1000",
                                  "train.checkpoint_every_minutes=0"])
    stream = ChunkStream([Utterance("tone", str(tmp_path / "tone.wav"))], 9600, buffer_size=1, seed=1)
    trainer = Trainer(cfg, tmp_path / "run", stream, None, progress=False)
    x, y = trainer.stream.next_batch(2)
    errors = []
    for _ in range(30):
        losses = trainer.train_step(x, y)
        trainer._after_step()
        errors.append(losses["f0_oct"])
        assert np.isfinite(losses["g_loss"]) and "voicing" in losses
    assert np.mean(errors[-5:]) < 0.5 * errors[0], errors

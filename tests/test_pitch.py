"""The pitch path (lrac/models/pitch.py): causal tracker, pitch code, harmonic source, and their
place in the tokens and the decoder. Streaming == one pass for a codec with the pitch path is
covered in test_frame.py."""

from __future__ import annotations

import math

import pytest
import torch
from lrac.codec import Codec
from lrac.config import load_config
from lrac.models import pitch
from lrac.models.frame import CausalSTFT, sqrt_hann
from lrac.models.pitch import (HarmonicSource, PitchPacker, PitchTracker, PitchUnpacker, code_to_f0,
                               YinCurve, hold_voicing, late_code_to_f0, pitch_to_code, pitch_to_late_code,
                               yin_cmnd)
from lrac.models.streaming import StreamSession
from lrac.quant.fsq import grid_with_bits

torch.set_num_threads(1)
SR, HOP = 24000, 240


def _gliding_tone(f0_hz: torch.Tensor) -> torch.Tensor:
    """Per-sample pitch ``[T]`` -> a 12-harmonic tone with 1/k amplitudes, ``[1, 1, T]``."""
    cycles = torch.cumsum(f0_hz.double() / SR, 0)
    tone = sum(torch.sin(2 * math.pi * k * cycles) / k for k in range(1, 13))
    return (0.2 * tone).float()[None, None]


def _cents(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1200 * torch.log2(a.double() / b.double()).abs()


# -- the tracker ------------------------------------------------------------------------------------

def test_tracker_follows_a_gliding_tone() -> None:
    t = torch.arange(SR) / SR
    truth = 110 + 60 * t                                   # 110 -> 170 Hz over a second
    f0, dip, voiced = PitchTracker(SR, HOP)(_gliding_tone(truth))
    assert f0.shape == dip.shape == voiced.shape == (1, SR // HOP)
    inner = slice(4, None)                                 # the first frames see the zero padding
    assert voiced[0, inner].all() and dip[0, inner].max() < 0.2
    cents = _cents(f0[0, inner], truth[HOP - 1::HOP][inner])   # frame k: the instant (k + 1) * hop
    assert cents.median() < 15 and cents.max() < 60, cents


def test_tracker_calls_noise_and_silence_unvoiced() -> None:
    gen = torch.Generator().manual_seed(0)
    tracker = PitchTracker(SR, HOP)
    _, _, voiced_noise = tracker(0.1 * torch.randn(1, 1, SR, generator=gen))
    f0_silence, _, voiced_silence = tracker(torch.zeros(1, 1, SR))
    assert voiced_noise.float().mean() < 0.05
    assert not voiced_silence.any() and torch.isfinite(f0_silence).all()


def test_tracker_streams_like_one_pass() -> None:
    wav = _gliding_tone(torch.full((SR // 2,), 140.0)) + 0.01 * torch.randn(1, 1, SR // 2)
    tracker = PitchTracker(SR, HOP)
    whole = tracker(wav)
    session = StreamSession(tracker, batch_size=1)
    parts = [session(wav[..., a:b]) for a, b in ((0, 100), (100, 100), (100, 2500), (2500, SR // 2))]
    for i in range(3):
        assert torch.equal(torch.cat([p[i] for p in parts], -1), whole[i])


def test_hold_voicing_continues_a_run_only_after_a_strict_frame() -> None:
    strict = torch.tensor([[0, 1, 0, 0, 0, 0, 1, 0]]).bool()
    loose = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 1]]).bool()
    assert hold_voicing(strict, loose).int().tolist() == [[0, 1, 1, 0, 0, 0, 1, 1]]
    # a voiced frame before the chunk carries the run in; an unvoiced one does not
    assert hold_voicing(strict, loose, torch.tensor([True])).int().tolist() == [[1, 1, 1, 0, 0, 0, 1, 1]]
    assert hold_voicing(strict, loose, torch.tensor([False])).equal(hold_voicing(strict, loose))
    # chunked with the last decision carried == all at once
    for cut in range(9):
        head = hold_voicing(strict[:, :cut], loose[:, :cut])
        prev = head[:, -1] if cut else torch.tensor([False])
        tail = hold_voicing(strict[:, cut:], loose[:, cut:], prev)
        assert torch.cat([head, tail], -1).equal(hold_voicing(strict, loose))


def _breathy_tone(seconds: float, seed: int) -> torch.Tensor:
    """A 150 Hz tone under noise strong enough that YIN's dip wanders around 0.2."""
    n = int(seconds * SR)
    gen = torch.Generator().manual_seed(seed)
    return _gliding_tone(torch.full((n,), 150.0)) + 0.1 * torch.randn(1, 1, n, generator=gen)


def test_voicing_hold_keeps_a_noisy_voiced_run_voiced() -> None:
    wav = _breathy_tone(1.0, 0)
    f0, dip, held = PitchTracker(SR, HOP)(wav)
    inner = slice(4, None)
    strict = dip[0, inner] < 0.2                                  # YIN's own rule
    assert strict.float().mean() < 0.5                            # drops most frames
    assert held[0, inner].float().mean() > strict.float().mean() + 0.3
    assert _cents(f0[0, inner][held[0, inner]], torch.tensor(150.0)).median() < 30
    # noise alone has no strict frame to start a run from
    _, _, noise = PitchTracker(SR, HOP)(0.1 * torch.randn(1, 1, SR, generator=torch.Generator().manual_seed(4)))
    assert noise.float().mean() < 0.05


def test_voicing_floor_is_a_level_not_a_voice() -> None:
    tone = _gliding_tone(torch.full((SR // 2,), 140.0))
    assert PitchTracker(SR, HOP)(tone * 10 ** (-45 / 20))[2][0, 4:].all()     # about -62 dB rms
    assert not PitchTracker(SR, HOP)(tone * 10 ** (-60 / 20))[2].any()        # about -77 dB: below -70


def _onset_tone(silence_s: float, tone_s: float) -> tuple[torch.Tensor, int]:
    """Silence, then a 200 Hz tone: ``([1, 1, T], the onset frame)`` (the first frame that ends
    inside the tone)."""
    lead = int(silence_s * SR)
    wav = torch.cat([torch.zeros(1, 1, lead), _gliding_tone(torch.full((int(tone_s * SR),), 200.0))], -1)
    return wav, lead // HOP


def test_onset_window_voices_an_onset_sooner() -> None:
    wav, onset = _onset_tone(0.2, 0.3)
    f0, dip, voiced = PitchTracker(SR, HOP)(wav)
    first = int(voiced[0].int().argmax())
    # where the long window's own rule hears it (the silence before has no level to voice)
    first_long = onset + int((dip[0, onset:] < 0.2).int().argmax())
    assert not voiced[0, :onset].any()                          # nothing voiced in the silence
    assert onset <= first < first_long                          # the short window hears it sooner
    assert _cents(f0[0, first:first_long], torch.tensor(200.0)).max() < 30
    # noise gives the short window no more to voice than the long one
    gen = torch.Generator().manual_seed(3)
    _, _, noise = PitchTracker(SR, HOP)(0.1 * torch.randn(1, 1, SR, generator=gen))
    assert noise.float().mean() < 0.05


def test_tracker_with_hold_onset_window_and_period_pick_streams_like_one_pass() -> None:
    """The hold's state (the last decision), the onset window and the period pick (no state of
    their own) stream."""
    wav = torch.cat([_onset_tone(0.1, 0.3)[0], _breathy_tone(0.4, 1), 0.05 * torch.randn(1, 1, 4000),
                     _breathy_tone(0.4, 2), _strong_second_harmonic(120.0)], -1)
    tracker = PitchTracker(SR, HOP)
    whole = tracker(wav)
    session = StreamSession(tracker, batch_size=1)
    cuts = (0, 100, 100, 2500, 7000, 9700, 16000, 30000, wav.shape[-1])
    parts = [session(wav[..., a:b]) for a, b in zip(cuts, cuts[1:])]
    for i in range(3):
        assert torch.equal(torch.cat([p[i] for p in parts], -1), whole[i])


def _strong_second_harmonic(f0_hz: float, seconds: float = 0.25) -> torch.Tensor:
    """``[1, 1, T]``: a weak fundamental under a strong second harmonic, whose half period YIN's
    first dip below 0.2 takes."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    phase = 2 * math.pi * f0_hz * t
    return (0.06 * torch.sin(phase) + 0.3 * torch.sin(2 * phase + 0.5) + 0.05 * torch.sin(3 * phase)).float()[None, None]


def test_the_tracker_takes_the_period_not_its_half() -> None:
    wav = _strong_second_harmonic(120.0)
    segs = wav[0, :, -(SR // 75 + 481):].double().flip(-1)[None]     # the tracker's newest window
    cmnd = yin_cmnd(segs, SR, (SR // 75,))[0][..., 0, :]
    assert _cents(YinCurve(cmnd, SR).pick()[0], torch.tensor(240.0)) < 30     # YIN's pick: an octave up
    assert _cents(YinCurve(cmnd, SR).period(0.06), torch.tensor(120.0)) < 30
    f0, _, voiced = PitchTracker(SR, HOP)(wav)
    inner = voiced[0, 4:]
    assert inner.float().mean() > 0.5 and _cents(f0[0, 4:][inner], torch.tensor(120.0)).median() < 15



def test_exported_yin_correlation_tracks_speech_as_the_ffts_do(monkeypatch) -> None:
    """An ONNX export computes YIN's correlation as one convolution (lrac/models/pitch.py), PyTorch
    with FFTs: on speech the two agree to float rounding, and the tracker's pitch and voicing with them."""
    import lrac
    from conftest import REPO
    audio, _ = lrac.audio.load_audio(REPO / "examples" / "p238_165.flac", SR)
    wav = torch.from_numpy(audio[: 2 * SR])[None, None]
    tracker = PitchTracker(SR, HOP)
    segs = wav[0, :, : tracker.span * 20].unfold(-1, tracker.span, HOP).flip(-1)       # [1, F, span]
    widths = (tracker.width, tracker.onset_width)
    ffts = pitch.yin_correlation(segs, widths, 481)
    direct = pitch._correlation_as_convolution(segs, widths, 481)
    assert (ffts - direct).abs().max() < 1e-5 * ffts[..., 0].abs().max()
    f0, _, voiced = tracker(wav)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    f0_export, _, voiced_export = tracker(wav)
    assert voiced.float().mean() > 0.3 and (voiced == voiced_export).float().mean() > 0.99
    both = voiced & voiced_export
    assert _cents(f0[both], f0_export[both]).max() < 1

# -- the pitch code ---------------------------------------------------------------------------------

def test_pitch_code_round_trip_within_half_a_step() -> None:
    f0 = torch.logspace(math.log10(50), math.log10(500), 300)
    code = pitch_to_code(f0, torch.ones_like(f0, dtype=torch.bool), 64)
    assert code.min() == 1 and code.max() == 63
    assert _cents(code_to_f0(code, 64), f0).max() < 33      # 62 steps over 3.32 octaves: 64 cents each
    assert (pitch_to_code(f0, torch.zeros_like(f0, dtype=torch.bool), 64) == 0).all()


def _random_pitch(frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 60 + 400 * torch.rand(2, frames, generator=gen), torch.rand(2, frames, generator=gen) > 0.3


def test_packed_pitch_unpacks_to_each_groups_first_frame() -> None:
    f0, voiced = _random_pitch(31, seed=1)                 # an odd count: the last group is partial
    symbols = PitchPacker(6, 2)(f0, voiced)
    assert symbols.shape == (2, 1, 31) and symbols.min() >= 0 and symbols.max() < 8
    f0_out, voicing = PitchUnpacker(6, 2, delay=1)(symbols)
    full = slice(0, 30)                                    # complete groups
    first = torch.arange(31)[full] // 2 * 2
    code = pitch_to_code(f0, voiced, 64)[:, first]
    voiced_out = code > 0
    assert torch.allclose(f0_out[:, full][voiced_out], code_to_f0(code, 64)[voiced_out].float())
    # the backfill voices the frame before a voiced one too; nothing else
    backfilled = ~voiced_out[:, :-1] & voiced_out[:, 1:]
    expected = voiced_out.clone()
    expected[:, :-1] |= backfilled
    assert torch.equal(voicing[:, :29].bool(), expected[:, :29])
    # unvoiced frames keep the last voiced pitch
    on = voicing[:, full].bool()
    for b in range(2):
        for k in range(1, 30):
            if not on[b, k] and on[b, :k].any():
                last = int(torch.nonzero(on[b, :k])[-1])
                assert f0_out[b, k] == f0_out[b, last]


@pytest.mark.parametrize("fine_bits", [0, 4], ids=["code", "code+refinement+late-onsets"])
def test_pitch_code_streams_like_one_pass(fine_bits: int) -> None:
    f0, voiced = _random_pitch(40, seed=2)
    packer = PitchPacker(6, 2, fine_bits)
    unpacker = PitchUnpacker(6, 2, delay=1, fine_bits=fine_bits)
    symbols = packer(f0, voiced)
    whole = unpacker(symbols)
    cuts = ((0, 1), (1, 4), (4, 4), (4, 17), (17, 40))
    enc = StreamSession(packer, batch_size=2)
    assert torch.equal(torch.cat([enc(f0[:, a:b], voiced[:, a:b]) for a, b in cuts], -1), symbols)
    dec = StreamSession(unpacker, batch_size=2)
    parts = [dec(symbols[..., a:b]) for a, b in cuts]
    assert [p[0].shape[-1] for p in parts] == [0, 3, 0, 13, 23]   # one frame held back, like the backbone
    parts.append(dec.flush(symbols[..., :0]))
    for i in range(2):
        assert torch.equal(torch.cat([p[i] for p in parts], -1), whole[i])


@pytest.mark.parametrize(("levels", "worst_cents"), [("uniform", 8.01), ("companded", 20.01)])
def test_refinement_gives_every_frame_its_own_pitch(levels: str, worst_cents: float) -> None:
    f0, voiced = _random_pitch(30, seed=3)
    f0 = 150 * 2 ** (0.1 * torch.sin(torch.arange(30) / 3))[None].repeat(2, 1)   # a moving pitch
    symbols = PitchPacker(6, 2, fine_bits=4, fine_levels=levels)(f0, voiced)
    assert symbols.shape == (2, 2, 30) and symbols[:, 1].max() < 16
    coarse, _ = PitchUnpacker(6, 2, delay=1)(symbols[:, :1])
    fine, voicing = PitchUnpacker(6, 2, delay=1, fine_bits=4, fine_levels=levels)(symbols)
    # the frames whose group's code is voiced (the others are late onsets and their backfill)
    on = voiced & voiced[:, torch.arange(30) // 2 * 2]
    # within half a step: 16 cents uniform; companded 15 cents near the code, wider further out
    assert _cents(fine[on], f0[on]).max() <= worst_cents
    assert _cents(coarse[on], f0[on]).max() > 30                    # the held 64-cent code alone
    # a bitrate without the second token decodes as the code alone
    assert torch.equal(PitchUnpacker(6, 2, delay=1, fine_bits=4, fine_levels=levels)(symbols[:, :1])[0],
                       coarse)


def test_companded_refinement_follows_jumps_the_uniform_one_clips() -> None:
    """A group's second frame an octave or 300 cents from its first: the uniform refinement stops at
    -128 / +112 cents, the companded one reaches both."""
    first = torch.tensor([120.0, 200.0, 300.0, 180.0])
    second = first * 2 ** (torch.tensor([1200.0, -1200.0, 300.0, -300.0]) / 1200)
    f0 = torch.stack([first, second], -1).reshape(1, 8)
    voiced = torch.ones(1, 8, dtype=torch.bool)
    errors = {}
    for levels in ("uniform", "companded"):
        symbols = PitchPacker(6, 2, fine_bits=4, fine_levels=levels)(f0, voiced)
        out, _ = PitchUnpacker(6, 2, delay=1, fine_bits=4, fine_levels=levels)(symbols)
        errors[levels] = _cents(out[0, 1::2], f0[0, 1::2])
    # companded: within half the 260 -> 380 cent gap of the offset from the first frame's code
    assert errors["companded"].max() <= 60.01 and errors["uniform"].min() > 100


def test_refinement_levels_are_checked() -> None:
    with pytest.raises(ValueError, match="refinement levels"):
        PitchPacker(6, 2, fine_bits=3, fine_levels="companded")
    with pytest.raises(ValueError, match="refinement levels"):
        PitchUnpacker(6, 2, delay=1, fine_bits=4, fine_levels="logarithmic")


def test_late_code_classes_cover_the_range_around_the_middle_value() -> None:
    f0 = torch.logspace(math.log10(50), math.log10(500), 400)
    code = pitch_to_late_code(f0, 4)
    assert code.min() == 0 and code.max() == 15 and not (code == 8).any()      # 8: no onset
    assert _cents(late_code_to_f0(code, 4), f0).max() <= 133                  # 15 classes of 266 cents


def test_late_onsets_voice_a_groups_second_frame_at_once() -> None:
    """A group whose first frame is unvoiced is coded unvoiced; its voiced second frame (an onset
    found a frame late) would wait for the next group: its refinement bits carry it instead."""
    f0 = torch.tensor([[110.0, 180.0, 185.0, 190.0, 100.0, 260.0, 250.0, 240.0, 100.0, 100.0]])
    voiced = torch.tensor([[False, True, True, True, False, True, False, False, False, False]])
    symbols = PitchPacker(6, 2, 4)(f0, voiced)
    assert symbols[0, 0, [0, 1, 4, 5]].eq(0).all() and symbols[0, 1, 6:].eq(8).all()   # coded unvoiced
    unpacker = PitchUnpacker(6, 2, delay=1, fine_bits=4)
    f0_out, voicing = unpacker(symbols)
    # frames 1 and 5 by their late onsets, frames 0 and 4 by the backfill
    assert voicing.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]]
    assert _cents(f0_out[0, [1, 5]], f0[0, [1, 5]]).max() <= 133
    assert f0_out[0, 0] == f0_out[0, 1] and f0_out[0, 4] == f0_out[0, 5]   # backfilled at the onset's pitch
    assert f0_out[0, 6] == f0_out[0, 5]                                    # the onset's pitch carries on
    # one token (1 kbps) has no refinement row: no late onsets
    assert unpacker(symbols[:, :1])[1].tolist() == [[0, 1, 1, 1, 0, 0, 0, 0, 0, 0]]


def test_backfill_voices_the_frame_before_an_onset() -> None:
    """The onset at frame 3 (a group's second frame, a late onset) is known in full when frame 2 is
    emitted; the one at frame 8 (a group's first frame) only by its first 3 bits."""
    f0 = torch.tensor([[100.0, 100.0, 100.0, 200.0, 210.0, 220.0, 100.0, 100.0, 150.0, 155.0, 160.0, 100.0]])
    voiced = torch.tensor([[False, False, False, True, True, True, False, False, True, True, True, False]])
    symbols = PitchPacker(6, 2, 4)(f0, voiced)
    filled_f0, filled = PitchUnpacker(6, 2, delay=1, fine_bits=4)(symbols)
    assert filled.tolist() == [[0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]]   # (frame 11 takes its group's code)
    assert filled_f0[0, 2] == filled_f0[0, 3]                         # the late onset's class pitch
    assert _cents(filled_f0[0, 7], f0[0, 8]) <= 257                   # within the group's first 3 bits
    # 1 kbps (the code alone): the onset at frame 8 is backfilled the same way
    assert PitchUnpacker(6, 2, delay=1, fine_bits=4)(symbols[:, :1])[1][0, 7] == 1


@pytest.mark.parametrize("rows", [1, 2], ids=["1kbps", "6kbps"])
def test_backfill_streams_like_one_pass(rows: int) -> None:
    f0, voiced = _random_pitch(41, seed=5)
    symbols = PitchPacker(6, 2, 4)(f0, voiced)[:, :rows]
    unpacker = PitchUnpacker(6, 2, delay=1, fine_bits=4)
    whole = unpacker(symbols)
    for cuts in (((0, 1), (1, 4), (4, 4), (4, 17), (17, 41)), tuple((i, i + 1) for i in range(41))):
        dec = StreamSession(unpacker, batch_size=2)
        parts = [dec(symbols[..., a:b]) for a, b in cuts] + [dec.flush(symbols[..., :0])]
        for i in range(2):
            assert torch.equal(torch.cat([p[i] for p in parts], -1), whole[i])


def test_unpacker_needs_the_lookahead_the_code_takes() -> None:
    with pytest.raises(ValueError, match="look-ahead"):
        PitchUnpacker(6, 2, delay=0)


@pytest.mark.parametrize("override", ["model.frame.pitch.bits=5", "model.frame.pitch.bits=1",
                                      "model.frame.decoder_lookahead_frames=0",
                                      "model.frame.pitch.fine_bits=1", "model.frame.pitch.fine_bits=10"])
def test_pitch_code_settings_that_cannot_work_are_refused(override: str) -> None:
    with pytest.raises(ValueError, match="pitch.bits|look-ahead|pitch.fine_bits|do not fit"):
        Codec(load_config("t1", [override]))


def test_refinement_rides_in_the_second_token_at_6_kbps_only() -> None:
    torch.manual_seed(0)
    codec = Codec(load_config("t1"))
    assert codec.layout.bits("pitch") == (3, 4) and codec.layout.bits("latent") == (7, 6, 10, 10)
    assert [s.codebook.codebook_size for s in codec.quantizer.stages] == [128, 64, 1024, 1024]
    t = torch.arange(SR) / SR
    f0 = 150 * 2 ** (0.15 * torch.sin(2 * math.pi * 2 * t))            # +-180 cents at 2 Hz
    tone = _gliding_tone(f0)
    truth = codec.encoder.net.pitch(tone.double())[0][0]                # what the tracker measured
    errors = {}
    for bitrate in (1000, 6000):
        tokens = codec.encode(tone, bitrate)
        assert tokens.max() < 1024                                       # 10 bits per token, as without
        parts = codec.layout.unpack(tokens)
        side = parts["pitch"]
        assert side.shape == (1, min(2, tokens.shape[1]), 100)
        assert torch.equal(codec.layout.pack(parts, tokens.shape[1]), tokens)
        f0_out, voicing = codec.decoder.net.pitch_unpacker(side)
        errors[bitrate] = _cents(f0_out[0, 5:-1], truth[5:-1]).max()
        assert voicing[0, 5:-1].all() and codec.decode(tokens).shape == tone.shape
    assert errors[6000] <= 20.01 < 30 < errors[1000]          # within the companded refinement's steps


# -- the source -------------------------------------------------------------------------------------

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


def _pulse_positions(wav: torch.Tensor) -> torch.Tensor:
    """Sample indices of a pulse train's peaks (local maxima above half the largest)."""
    x = wav.flatten()
    peak = (x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:]) & (x[1:-1] > 0.2 * x.max())
    return torch.nonzero(peak).flatten() + 1


def test_source_holds_each_frames_pitch() -> None:
    # 100 Hz (a 240-sample period: one pulse per hop) for two frames, then 300 Hz (80 samples)
    f0 = torch.tensor([[100.0, 100.0, 300.0, 300.0]])
    wav = _source()(f0, torch.ones(1, 4))
    pulses = _pulse_positions(wav[..., 2 * HOP:3 * HOP + 1])            # the third hop
    # it is at 300 Hz from the hop's first sample: a pulse every 80 samples
    assert pulses.numel() == 3 and (pulses.diff() - 80).abs().max() <= 1
    # an onset at 200 Hz (pulses 120 samples apart): the first voiced hop's pulses are at full level at once
    onset = _source()(torch.full((1, 3), 200.0), torch.tensor([[0.0, 1.0, 1.0]]))
    assert onset[..., :HOP].abs().max() == 0
    peaks = onset.flatten()[HOP + _pulse_positions(onset[..., HOP:2 * HOP + 1])]
    assert peaks.numel() == 2 and peaks.min() > 0.95 * onset[..., 2 * HOP:].max()


def test_source_streams_with_a_continuous_phase() -> None:
    gen = torch.Generator().manual_seed(3)
    f0 = 80 + 300 * torch.rand(2, 30, generator=gen)
    voicing = (torch.rand(2, 30, generator=gen) > 0.3).float()
    source = _source()
    whole = source(f0, voicing)
    session = StreamSession(source, batch_size=2)
    parts = [session(f0[:, a:b], voicing[:, a:b]) for a, b in ((0, 1), (1, 8), (8, 8), (8, 30))]
    assert (torch.cat(parts, -1) - whole).abs().max() < 1e-5


# -- in the codec ----------------------------------------------------------------------------------

def _pitch_codec(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    return Codec(load_config("t1", ["model.frame.pitch.fine_bits=0", "model.frame.lowband=null"]))


def test_decoder_mixes_the_source_on_voiced_frames_only() -> None:
    net = _pitch_codec().decoder.net
    latent = torch.randn(1, net.backbone.embed.in_features, 20)
    bins = net.istft.n_fft // 2 + 1
    log_mag, phase, *_ = net.backbone(latent).split(bins, dim=1)
    aperiodic_only = net.istft(torch.cat([log_mag, phase], 1))
    unvoiced = net(latent, torch.zeros(1, 1, 20, dtype=torch.long))        # code 0: unvoiced
    assert torch.allclose(unvoiced, aperiodic_only, atol=1e-6)
    voiced = net(latent, torch.full((1, 1, 20), 5, dtype=torch.long))      # code 45 every 2 frames
    assert (voiced - aperiodic_only).abs().max() > 1e-4
    with pytest.raises(ValueError, match="pitch symbols"):
        net(latent)


def test_harmonic_phase_turns_the_harmonic_part_only() -> None:
    torch.manual_seed(0)
    net = Codec(load_config("t1")).decoder.net
    bins = net.istft.n_fft // 2 + 1
    latent = torch.randn(1, net.backbone.embed.in_features, 20)
    side = torch.stack([torch.full((1, 20), 5), torch.full((1, 20), 8)], 1)   # voiced, no refinement
    assert torch.equal(net.backbone.out.weight[3 * bins:], torch.zeros(bins, net.backbone.out.in_features))
    turned = {}
    with torch.no_grad():
        for angle in (0.0, math.pi):
            net.backbone.out.bias[3 * bins:] = angle
            turned[angle] = net(latent, side)
        log_mag, phase, share, _ = net.backbone(latent).split(bins, dim=1)
        voicing = net.pitch_unpacker(side)[1]
        share = torch.sigmoid(share) * voicing[:, None]
        aperiodic = net.istft(torch.cat([log_mag + torch.log(1 - share), phase], 1))
    # half a turn flips the sign of the harmonic part and leaves the aperiodic part as it is
    assert torch.allclose(turned[0.0] + turned[math.pi], 2 * aperiodic, atol=1e-5)
    assert (turned[0.0] - aperiodic).abs().max() > 1e-3


def test_tokens_carry_the_pitch_code_within_the_bitrate() -> None:
    codec = _pitch_codec()
    assert codec.layout.bits("pitch") == (3,)
    assert [s.codebook.codebook_size for s in codec.quantizer.stages] == [128] + [1024] * 5
    tone = _gliding_tone(torch.full((SR,), 150.0))
    for bitrate, n_q in ((1000, 1), (6000, 6)):
        tokens = codec.encode(tone, bitrate)
        assert tokens.shape == (1, n_q, 100) and tokens.max() < 1024   # 10 bits per token, as without
    parts = codec.layout.unpack(tokens)
    assert torch.equal(codec.layout.pack(parts, 6), tokens) and parts["latent"][:, 0].max() < 128
    f0, voicing = codec.decoder.net.pitch_unpacker(parts["pitch"])
    assert voicing[0, 5:-1].all() and _cents(f0[0, 5:-1], torch.tensor(150.0)).max() < 40
    assert codec.decode(tokens).shape == tone.shape


def test_fsq_grid_gives_up_the_pitch_bits() -> None:
    assert grid_with_bits([4, 4, 4, 4, 4], 7) == [4, 4, 4, 2]
    assert grid_with_bits([4, 4, 4, 4, 4], 6) == [4, 4, 4]
    assert grid_with_bits([8, 8], 6) == [8, 8]
    with pytest.raises(ValueError, match="powers of two"):
        grid_with_bits([3, 5], 3)

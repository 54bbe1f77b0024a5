"""The frame-rate family (lrac/models/frame.py) and its presets t1 / t2 (the shipped models' architectures).

Streaming == one pass on random chunk sizes, compute and latency inside the track limits as
complexity_report measures them, exact 1 / 6 kbps token rates, save/load round trip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import PLAIN_HEAD, speechlike

from lrac.codec import Codec, Generator
from lrac.config import ConfigError, load_config
from lrac.eval.complexity import complexity_report
from lrac.models.frame import CausalISTFT, CausalSTFT, fft_macs
from lrac.models.streaming import StreamSession

torch.set_num_threads(1)

PRESETS = ["t1", "t2"]
LIMITS = {"t1": (700.0, 300.0, 30.0), "t2": (2600.0, 600.0, 50.0)}


def _config(preset: str):
    """``PRESET`` or ``PRESET+plain`` (a plain iSTFT head: the pitch path off), ``PRESET+coarse``
    (the pitch path without its refinement), ``PRESET+lowband`` / ``PRESET+nolowband`` (with /
    without the low-band code at 6 kbps)."""
    name, _, extra = preset.partition("+")
    return load_config(name, {"": [], "plain": PLAIN_HEAD,
                              "coarse": ["model.frame.pitch.fine_bits=0", "model.frame.lowband=null"],
                              "lowband": ["model.frame.lowband={}"],
                              "nolowband": ["model.frame.lowband=null"]}[extra])


def _codec(preset: str, seed: int = 0) -> Codec:
    """A codec whose blocks matter: layer scales and biases pushed away from their init."""
    torch.manual_seed(seed)
    codec = Codec(_config(preset))
    with torch.no_grad():
        for name, p in codec.generator.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
    return codec


def _voiced_audio(batch: int, samples: int, gen: torch.Generator) -> torch.Tensor:
    """``[batch, 1, samples]``: a harmonic tone with a moving pitch plus noise, so that the pitch
    path has voiced and unvoiced frames to code."""
    tones = torch.from_numpy(np.stack([speechlike(samples / 24000, seed=s) for s in range(batch)]))[:, None]
    return tones + 0.05 * torch.randn(batch, 1, samples, generator=gen)


def _chunks(total: int, high: int, gen: torch.Generator) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < total:
        n = int(torch.randint(0, high, (1,), generator=gen))
        out.append((i, min(total, i + n)))
        i += n
    return out


@pytest.fixture(scope="module", params=PRESETS + ["t1+plain", "t1+coarse", "t1+nolowband", "t2+lowband"])
def codec(request) -> Codec:
    return _codec(request.param)


# -- compute, latency, bitrate --------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS + ["t1+plain", "t2+plain", "t2+lowband"])
def test_preset_within_track_limits(preset: str) -> None:
    report = complexity_report(Codec(_config(preset)))
    total, receive, latency = LIMITS[preset.partition("+")[0]]
    assert report["track"] == int(preset.partition("+")[0][-1])
    assert all(report["pass"].values()), report["pass"]
    assert all(report["pass_with_rvq"].values()), report["pass_with_rvq"]
    # margins: RVQ included, at least 3 % below each compute limit
    assert report["total_with_rvq_mflops"] <= 0.97 * total
    assert report["receive_with_rvq_mflops"] <= 0.97 * receive
    assert report["latency_ms"] == pytest.approx(latency)
    assert report["frame_rate"] == 100


def test_t1_compute_counted_by_hand() -> None:
    """The decoder count (plain head) equals the sum of its matrix products, depthwise convs and
    the iSTFT."""
    cfg = load_config("t1", PLAIN_HEAD)
    f, latent = cfg.model.frame, cfg.model.latent_dim
    hidden = int(round(f.decoder_dim * f.decoder_mlp_ratio))
    bins = f.n_fft // 2 + 1
    block = f.decoder_dim * f.kernel + 2 * f.decoder_dim * hidden
    per_frame = (latent * f.decoder_dim + f.decoder_layers * block + f.decoder_dim * 2 * bins
                 + fft_macs(f.n_fft) + f.n_fft + 2 * bins)
    report = complexity_report(Codec(cfg))
    assert report["decoder_mflops"] == pytest.approx(2 * per_frame * 100 / 1e6, rel=1e-12)
    assert report["decoder_lookahead_ms"] == pytest.approx(20.0)   # 1 conv frame + overlap-add
    assert report["encoder_lookahead_ms"] == pytest.approx(0.0)


def test_token_rates_are_exactly_1_and_6_kbps(codec: Codec) -> None:
    lowband_rows = 2 if codec.config.model.frame.lowband else 0    # the low-band code's tokens
    assert codec.bits_per_index == 10 and codec.n_stages == 6 and codec.quantizer.n_stages == 6 - lowband_rows
    assert codec.bitrates_bps == [1000, 6000]
    assert codec.stages_for_bitrate(1000) == 1 and codec.stages_for_bitrate(6000) == 6
    x = 0.1 * torch.randn(1, 1, 24000)
    for bitrate, n_q in ((1000, 1), (6000, 6)):
        tokens = codec.encode(x, bitrate)
        assert tokens.shape == (1, n_q, 100)
        assert int(tokens.min()) >= 0 and int(tokens.max()) < 1024
        bits_per_second = tokens.shape[1] * codec.bits_per_index * tokens.shape[2] / 1.0
        assert bits_per_second == bitrate
    with pytest.raises(ValueError, match="supports: 1000, 6000"):
        codec.stages_for_bitrate(3000)


# -- streaming ------------------------------------------------------------------------------------

def test_streaming_networks_equal_one_pass(codec: Codec) -> None:
    gen = torch.Generator().manual_seed(1)
    hop = codec.hop_length
    wav = _voiced_audio(2, hop * 41, gen)
    latent, symbols = codec.encoder.analyze(wav)
    session = StreamSession(codec.encoder, batch_size=2, fn=codec.encoder.analyze)
    parts = [session(wav[..., a:b]) for a, b in _chunks(wav.shape[-1], 3 * hop, gen)]
    parts.append(session.flush(wav[..., :0]))
    streamed = torch.cat([p[0] for p in parts], dim=-1)
    assert streamed.shape == latent.shape
    assert (streamed - latent).abs().max() <= 1e-5
    frame = codec.config.model.frame
    assert set(symbols) == ({"pitch"} if frame.pitch else set()) | ({"lowband"} if frame.lowband else set())
    for name, rows in symbols.items():   # the pitch and low-band symbols, voiced frames among them
        assert torch.equal(torch.cat([p[1][name] for p in parts], dim=-1), rows) and rows.any()

    def cut(a: int, b: int) -> dict:
        return {name: rows[..., a:b] for name, rows in symbols.items()}

    audio = codec.decoder(latent, symbols)
    session = StreamSession(codec.decoder, batch_size=2)
    parts = [session(latent[..., a:b], cut(a, b)) for a, b in _chunks(latent.shape[-1], 5, gen)]
    parts.append(session.flush(latent[..., :0], cut(0, 0)))
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == audio.shape == (2, 1, hop * 41)
    assert (streamed - audio).abs().max() <= 1e-5


def test_stream_codec_equals_one_pass(codec: Codec) -> None:
    gen = torch.Generator().manual_seed(2)
    length = 240 * 33 + 77                      # not a whole number of frames
    wav = _voiced_audio(1, length, gen)
    for bitrate in (1000, 6000):
        tokens = codec.encode(wav, bitrate)
        audio = codec.decode(tokens, length=length)
        enc = codec.stream_encoder(bitrate)
        parts = [enc.push(wav[..., a:b]) for a, b in _chunks(length, 700, gen)]
        parts.append(enc.flush())
        assert torch.equal(torch.cat(parts, dim=-1), tokens)
        dec = codec.stream_decoder()
        parts = [dec.push(tokens[..., a:b]) for a, b in _chunks(tokens.shape[-1], 6, gen)]
        parts.append(dec.flush(length))
        streamed = torch.cat(parts, dim=-1)
        assert streamed.shape == audio.shape == (1, 1, length)
        assert (streamed - audio).abs().max() <= 1e-5


def test_streaming_holds_back_exactly_the_declared_lookahead() -> None:
    """t1 decoder: after f frames, (f - 2) * hop samples are final (1 conv frame + overlap-add;
    the pitch code's one frame of look-ahead runs beside the conv's)."""
    codec = _codec("t1")
    session = StreamSession(codec.decoder, batch_size=1)
    pitch = torch.full((1, 1, 10), 5, dtype=torch.long)
    out = session(torch.randn(1, codec.quantizer.latent_dim, 10), {"pitch": pitch})
    assert out.shape[-1] == (10 - 2) * codec.hop_length
    flushed = session.flush(torch.zeros(1, codec.quantizer.latent_dim, 0), {"pitch": pitch[..., :0]})
    assert flushed.shape[-1] == 2 * codec.hop_length


# -- the STFT pair ----------------------------------------------------------------------------------

def test_stft_pair_reconstructs_the_signal() -> None:
    """Analysis -> (log-magnitude, phase) -> synthesis gives the input back wherever both frames
    covering a sample exist (all but the last hop): the framing of encoder and decoder agrees."""
    stft, istft = CausalSTFT(480, 240), CausalISTFT(480, 240)
    wav = torch.randn(2, 1, 240 * 20, dtype=torch.float64).float()
    spec = stft(wav)
    assert spec.shape == (2, 241, 20)
    features = torch.cat([spec.abs().clamp(min=1e-12).log(), spec.angle()], dim=1)
    out = istft(features)
    assert out.shape == wav.shape
    assert (out - wav)[..., : -240].abs().max() < 1e-4
    assert istft.lookahead_samples == 1.0


def test_stft_costs_are_declared() -> None:
    stft, istft = CausalSTFT(480, 240), CausalISTFT(480, 240)
    spec = stft(torch.zeros(1, 1, 24000))
    per_frame = math.ceil(2.5 * 480 * math.log2(480))
    assert stft.extra_macs((None,), spec) == pytest.approx(100 * (per_frame + 480))
    assert istft.extra_macs((torch.zeros(1, 482, 100),), None) == pytest.approx(
        100 * (per_frame + 480 + 482))


# -- training, save / load, config errors --------------------------------------------------------

def test_training_step_has_finite_gradients() -> None:
    torch.manual_seed(3)
    gen = Generator(load_config("t1"))
    gen.train()
    wav = 0.1 * torch.randn(2, 1, 240 * 30)
    for n_q in (1, 6):
        out, commit = gen(wav, n_q)
        assert out.shape == wav.shape
        loss = (out - wav).abs().mean() + commit
        loss.backward()
        grads = [p.grad for p in gen.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        gen.zero_grad()


def test_save_load_round_trip(tmp_path) -> None:
    codec = _codec("t1", seed=4)
    wav = 0.2 * torch.randn(1, 1, 240 * 25 + 10)
    tokens = codec.encode(wav, 6000)
    audio = codec.decode(tokens)
    path = tmp_path / "model.pt"
    codec.save(path)
    loaded = Codec.load(path)
    assert loaded.config.model.family == "frame"
    assert loaded.config.model_dict() == codec.config.model_dict()
    assert loaded.model_id == codec.model_id
    assert torch.equal(loaded.encode(wav, 6000), tokens)
    assert (loaded.decode(tokens) - audio).abs().max() <= 1e-6


def test_bad_frame_config_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of model.frame.hop"):
        Codec(load_config("t1", ["model.frame.n_fft=500"]))
    with pytest.raises(ValueError, match="lookahead_frames"):
        Codec(load_config("t1", ["model.frame.decoder_lookahead_frames=9"]))
    with pytest.raises(ConfigError):
        load_config("t1", ["model.frame.window=hann"])
    with pytest.raises(ConfigError, match="no longer a setting"):     # the pitch rules are fixed
        load_config("t1", ["model.frame.voicing_hold=0.1"])
    with pytest.raises(ConfigError, match="model.frame.pitch.*off"):
        load_config("t1", PLAIN_HEAD + ["model.frame.pitch.bits=6"])

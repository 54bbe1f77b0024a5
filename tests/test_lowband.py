"""The low-band code (lrac/models/lowband.py): the lowest harmonics coded close to the waveform at 6 kbps."""

import math

import pytest
import torch

from lrac.codec import Codec, model_identity
from lrac.config import load_config
from lrac.models.frame import overlap_add, sqrt_hann
from lrac.models.lowband import (LowBandDecoder, LowBandEncoder, PackTables, UnpackTables, code_bits, join_rows,
                                 layouts, pack, row_bits, split_rows, unpack)

torch.set_num_threads(1)
SR, N, HOP = 24000, 480, 240


@pytest.mark.parametrize("layout, f0_hz, amps", [
    ("uniform", 150.0, (0.25, 0.125, 0.0625)),       # -12, -18, -24 dB: three harmonics below 500 Hz
    ("adaptive", 150.0, (0.25, 0.125, 0.0625)),
    ("adaptive", 200.0, (0.25, 0.125 * 2 ** 0.5)),     # two: -12 and -15 dB (3 dB steps)
    ("adaptive", 300.0, (0.25 * 10 ** (-0.75 / 20),)),  # one: -12.75 dB (0.75 dB steps)
])
def test_harmonics_on_the_grid_come_back_exactly(layout, f0_hz, amps) -> None:
    """Amplitudes and phases that the layout can represent (every frame end advances each harmonic
    by a multiple of 90 degrees at these pitches) are rebuilt to within the least-squares fit's
    rounding."""
    frames_n = 30
    t = torch.arange(HOP * frames_n, dtype=torch.float64) / SR
    phases = (math.pi / 4, -math.pi / 2, math.pi)
    wav = sum(a * torch.cos(2 * math.pi * f0_hz * h * t + p) for h, a, p in zip((1, 2, 3), amps, phases))
    rows = row_bits(3)
    enc = LowBandEncoder(N, HOP, SR, 3, layout, sqrt_hann(N).double())
    dec = LowBandDecoder(N, HOP, SR, 3, layout, sqrt_hann(N).double())
    f0 = torch.full((1, frames_n), f0_hz, dtype=torch.float64)
    voiced = torch.ones(1, frames_n)
    symbols = enc(wav[None, None], f0, voiced)                     # [1, 2, F] at token positions
    assert symbols.shape == (1, len(rows), frames_n) and int(symbols[0, :, 0].sum()) == 0
    frames, keep = dec(symbols, f0)                                 # frame f from position f + 1
    rebuilt = overlap_add(frames, HOP)[0, N - HOP:]                 # sample 0 at the first frame's end
    ref = wav[: rebuilt.shape[-1]]
    steady = slice(2 * N, (frames_n - 3) * HOP)                      # whole frames with codes on both sides
    err = (rebuilt[steady] - ref[steady]).square().mean() / ref[steady].square().mean()
    assert 10 * math.log10(1 / err) > 40
    # the neural spectrum gives way below (harmonics + 1/2) x f0 where a code came, nowhere in the last frame
    bins_hz = torch.arange(N // 2 + 1) * SR / N
    assert torch.equal(keep[0, :, 5] > 0, bins_hz >= (len(amps) + 0.5) * f0_hz) and bool((keep[0, :, -1] > 0).all())


def test_adaptive_layouts_fill_the_code() -> None:
    """Each count of harmonics below 500 Hz has a layout within the code's 20 bits, and a valid code
    is never the "no code" value."""
    table = layouts("adaptive", 3)
    assert sorted(table) == [1, 2, 3] and all(layout.bits <= code_bits(3) for layout in table.values())
    assert table[3].bits == table[2].bits == code_bits(3)
    quiet = torch.full((1, 1, 3), -300.0)                                   # below every level
    assert all(int(pack(layout, quiet, torch.zeros(1, 1, 3))) > 0 for layout in table.values())


def test_old_model_files_decode_their_low_band_as_they_were_made(tmp_path) -> None:
    """A model file of format 2 with a low band (t1 version 16) keeps the uniform layout its codes
    were made in, and its identity; a file saved today names its layout."""
    codec = Codec(load_config("t1", ["model.frame.lowband.layout=uniform"]))
    codec.save(tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=False)
    assert state["config"]["model"]["frame"]["lowband"]["layout"] == "uniform"
    del state["config"]["model"]["frame"]["lowband"]["layout"]
    state["version"] = 2
    state["model_id"] = model_identity(state["config"], state["generator"]).hex()
    torch.save(state, tmp_path / "old.pt")
    old = Codec.load(tmp_path / "old.pt")
    assert old.config.model.frame.lowband.layout == "uniform" and old.model_id.hex() == state["model_id"]
    assert Codec(load_config("t1")).config.model.frame.lowband.layout == "adaptive"


def test_unvoiced_frames_and_high_voices_send_no_code() -> None:
    rows = row_bits(3)
    enc = LowBandEncoder(N, HOP, SR, 3, "adaptive", sqrt_hann(N))
    wav = 0.1 * torch.randn(1, 1, HOP * 8)
    f0 = torch.tensor([[120.0, 120, 120, 600, 600, 120, 120, 120]])
    voiced = torch.tensor([[1.0, 1, 0, 1, 1, 1, 1, 1]])
    codes = join_rows(enc(wav, f0, voiced), rows)[0]
    # position p holds frame p - 1: frame 2 unvoiced, frames 3-4 above 500 Hz
    assert codes[0] == 0 and codes[3] == 0 and codes[4] == 0 and codes[5] == 0
    assert bool((codes[[1, 2, 6, 7]] > 0).all())


def test_bfloat16_training_codes_what_inference_codes() -> None:
    """The least-squares fit ignores autocast: under bfloat16 training the symbols are those of a
    float32 pass (in bfloat16 the Gram matrix and the fit move amplitudes and phases across steps)."""
    enc = LowBandEncoder(N, HOP, SR, 3, "adaptive", sqrt_hann(N))
    gen = torch.Generator().manual_seed(2)
    frames_n = 200
    t = torch.arange(HOP * frames_n) / SR
    f0_track = 110 + 60 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0_track, 0) / SR
    wav = sum(0.2 / h * torch.cos(h * phase + h) for h in (1, 2, 3)) + 0.01 * torch.randn(t.shape, generator=gen)
    f0 = f0_track[HOP - 1::HOP][None]
    voiced = torch.ones(1, frames_n)
    exact = enc(wav[None, None], f0, voiced)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(enc(wav[None, None], f0, voiced), exact)


def test_code_rows_round_trip() -> None:
    rows = row_bits(5)
    assert sum(rows) == code_bits(5) == 30 and rows == (10, 10, 10)
    codes = torch.randint(0, 1 << 30, (2, 7))
    assert torch.equal(join_rows(split_rows(codes, rows), rows), codes)


def test_lowband_leaves_1_kbps_alone_and_changes_6_kbps() -> None:
    """The low-band code takes the last two tokens: 1 kbps is the same model and bitstream."""
    torch.manual_seed(0)
    plain = Codec(load_config("t1", ["model.frame.lowband=null"]))
    lowband = Codec("t1")
    state = lowband.generator.state_dict()
    lowband.generator.load_state_dict({k: v for k, v in plain.generator.state_dict().items() if k in state})
    t = torch.arange(24000) / SR
    wav = (0.3 * torch.sin(2 * math.pi * 140 * t) * torch.sin(2 * math.pi * 2 * t) ** 2)[None, None]
    assert torch.equal(plain.encode(wav, 1000), lowband.encode(wav, 1000))
    tokens = plain.encode(wav, 1000)
    assert torch.equal(plain.decode(tokens), lowband.decode(tokens))
    assert lowband.layout.rows_carried("lowband", 6) == 2 and lowband.layout.rows_carried("lowband", 1) == 0
    six = lowband.encode(wav, 6000)
    assert torch.equal(six[:, :4], plain.encode(wav, 6000)[:, :4])         # the latent and pitch rows
    assert bool((six[0, 4:, 10:] > 0).any())                                # a voiced tone sends codes


@pytest.mark.parametrize("setting, message", [
    (["model.frame.pitch=null", "model.frame.lowband={}"], "needs the pitch path"),
    (["model.frame.lowband={}", "model.frame.lowband.harmonics=2"], "must be odd"),
    (["model.frame.lowband.layout=spread"], "unknown low-band layout"),
    (["model.frame.lowband.harmonics=5"], "codes 3 harmonics, not 5"),
])
def test_bad_lowband_config_is_refused(setting, message) -> None:
    with pytest.raises(ValueError, match=message):
        Codec(load_config("t1", setting))


def test_a_lost_frame_asks_the_decoder_to_extrapolate_its_low_band() -> None:
    """Concealment repeats the pitch over a lost frame but not the low-band code (its phase would be
    wrong by a frame's turn): the lost frames carry -1, -2, ... for the decoder to extrapolate."""
    from lrac.conceal import conceal
    torch.manual_seed(0)
    codec = Codec(load_config("t1", ["model.frame.lowband={}"]))
    t = torch.arange(HOP * 20) / SR
    wav = (0.3 * torch.sin(2 * math.pi * 140 * t))[None, None]
    latent, symbols = codec.encoder.analyze(wav)
    quantized = codec.quantizer.decode(codec.quantizer.encode(latent, 4))
    lost = torch.zeros(1, 20, dtype=torch.bool)
    lost[:, 10:12] = True
    assert bool((symbols["lowband"][..., 9:12] > 0).all())
    for method in ("repeat", "learned"):
        _, out = conceal(quantized, symbols, lost, codec.generator.silence(6), method,
                         codec.decoder.missing_latent, codec.decoder.symbol_periods)
        assert torch.equal(out["lowband"][0, :, 10:12], torch.tensor([[-1, -2]] * 2))
        assert torch.equal(out["lowband"][..., :10], symbols["lowband"][..., :10])
        assert torch.equal(out["pitch"][:, 0, 10:12], symbols["pitch"][:, 0, 8:10])  # the pitch code repeats
    _, out = conceal(quantized, symbols, lost, codec.generator.silence(6), "zero")
    assert bool((out["lowband"][..., 10:12] == 0).all())                            # no concealment: no code


def test_the_decoder_continues_a_steady_low_band_over_lost_frames_in_one_pass_and_streaming() -> None:
    """A steady voice's harmonics go on through lost frames with their phases (the level held for
    the burst's first frames), and a stream cut into chunks extrapolates as one pass does."""
    from lrac.models.streaming import StreamSession
    frames_n, f0_hz = 30, 150.0
    t = torch.arange(HOP * frames_n, dtype=torch.float64) / SR
    wav = sum(a * torch.cos(2 * math.pi * f0_hz * h * t + p)   # on the layout's grid, as above
              for h, a, p in zip((1, 2, 3), (0.25, 0.125, 0.0625), (math.pi / 4, -math.pi / 2, math.pi)))
    enc = LowBandEncoder(N, HOP, SR, 3, "adaptive", sqrt_hann(N).double())
    dec = LowBandDecoder(N, HOP, SR, 3, "adaptive", sqrt_hann(N).double())
    f0 = torch.full((1, frames_n), f0_hz, dtype=torch.float64)
    symbols = enc(wav[None, None], f0, torch.ones(1, frames_n))
    lossless, _ = dec(symbols, f0)
    concealed = symbols.clone()
    concealed[..., 12:16] = -torch.arange(1, 5)                  # positions 12-15: frames 11-14 lost
    frames, keep = dec(concealed, f0)
    gap = slice(11, 15)
    err = (frames[0, gap] - lossless[0, gap]).square().sum() / lossless[0, gap].square().sum()
    assert 10 * math.log10(1 / err) > 40 and bool((keep[0, :, gap] < 1).any())
    without = concealed.clone()
    without[..., 12:16] = 0                                       # no code: nothing to continue
    assert dec(without, f0)[0][0, gap].abs().max() == 0
    session, parts = StreamSession(dec), []
    for (a, b), (c, d) in [((0, 5), (0, 4)), ((5, 13), (4, 12)), ((13, frames_n), (12, frames_n - 1)),
                           ((frames_n, frames_n), (frames_n - 1, frames_n))]:
        parts.append(session(concealed[..., a:b], f0[:, c:d])[0])
    assert torch.allclose(torch.cat(parts, 1), frames, atol=1e-9)


@pytest.mark.parametrize("name", ["adaptive", "uniform"])
def test_layout_tables_match_pack_and_unpack(name):
    """The table formulations (every layout at once, as lookups; what the encoder and decoder and
    their ONNX export run) give :func:`pack`'s and :func:`unpack`'s results bit for bit, in each
    frame's layout (the count of active harmonics), also at rounding boundaries."""
    torch.manual_seed(0)
    table, h = layouts(name, 3), 3
    amp_db = torch.randn(2, 400, h) * 30 - 20
    amp_db = torch.where(torch.rand(2, 400, h) < 0.1, torch.full_like(amp_db, -200.0), amp_db)
    amp_db[0] = torch.round(amp_db[0] / 1.5) * 1.5                      # on the rounding boundaries
    phase = (torch.rand(2, 400, h) * 2 - 1) * math.pi
    phase[1] = torch.round(phase[1] / (math.pi / 64)) * (math.pi / 64)
    n_active = torch.randint(0, h + 1, (2, 400))
    codes = torch.randint(0, 1 << code_bits(h), (2, 400))
    got_code = PackTables(table, h, torch.float32, "cpu").pack(amp_db, phase, n_active)
    got = UnpackTables(table, h, torch.float32, "cpu").unpack(codes, n_active)
    for k, layout in table.items():
        here = n_active == k
        assert torch.equal(got_code[here], pack(layout, amp_db, phase)[here])
        for g, want in zip(got, unpack(layout, codes, h, torch.float32)):
            assert torch.equal(g[here], want[here])
    none = n_active == 0
    assert not got[0][none].any() and not got[1][none].any() and not got[2][none].any()

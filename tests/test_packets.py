"""Packets: the format and its refusals (fuzzed), loss patterns, concealment, the packet API."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conftest import speechlike
from lrac.codec import Codec, model_identity
from lrac.conceal import FADE_FRAMES, HOLD_FRAMES, ConcealState, conceal
from lrac.packets import PacketError, PacketFormat, erasure_mask, loss_pattern, model_tag

torch.set_num_threads(1)
FMT = PacketFormat(tag=8, stages=(1, 6), bitrates_bps=(1000, 6000), bits=10)


@pytest.fixture(scope="module")
def t1() -> Codec:
    return Codec.pretrained("t1")


# -- the format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_q, frames, size", [(1, 1, 3), (1, 2, 4), (1, 4, 6), (6, 1, 9), (6, 2, 16), (6, 4, 31)])
def test_round_trip_and_size(n_q, frames, size):
    tokens = np.random.default_rng(frames).integers(0, 1024, (n_q, frames))
    packet = FMT.pack(tokens)
    assert len(packet) == size == FMT.packet_bytes(frames, FMT.stages.index(n_q))
    assert np.array_equal(FMT.unpack(packet), tokens)
    assert FMT.frames_in(packet) == frames


def test_toc_byte_layout():
    packet = FMT.pack(np.zeros((6, 3), dtype=np.int64))
    assert packet[0] == 8 << 4 | 1 << 2 | 2       # tag 8, mode 1 (6 kbps), 3 frames


def test_the_tag_is_the_model_id_s_high_nibble(t1):
    assert PacketFormat.of(t1).tag == model_tag(t1.model_id) != model_tag(Codec.pretrained("t2").model_id)
    assert model_tag(bytes.fromhex("16475a9096080fb8")) == 0x1 ^ 0x6 ^ 0x4 ^ 0x7 ^ 0x5 ^ 0xa ^ 0x9 ^ 0x0 ^ 0x9 ^ 0x6 ^ 0x0 ^ 0x8 ^ 0x0 ^ 0xf ^ 0xb ^ 0x8
    t2 = Codec.pretrained("t2")
    packet = PacketFormat.of(t2).pack(np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(PacketError, match="another model"):
        PacketFormat.of(t1).unpack(packet)


def test_bad_packets_are_refused_with_a_reason():
    good = FMT.pack(np.full((1, 2), 1023))
    cases = {b"": "empty packet", good + b"\0": "is 4 bytes, got 5", good[:-1]: "is 4 bytes, got 3",
             bytes([0x1 << 4 | good[0] & 15]) + good[1:]: "another model",
             bytes([good[0] | 3 << 2]) + good[1:]: "mode 3 is not one of",
             good[:-1] + bytes([good[-1] | 1]): "nonzero padding"}
    for packet, reason in cases.items():
        with pytest.raises(PacketError, match=reason):
            FMT.unpack(packet)
    with pytest.raises(PacketError, match="a packet is bytes"):
        FMT.unpack("abc")
    with pytest.raises(PacketError, match="1-4 frames"):
        FMT.pack(np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(PacketError, match="none of this model's modes"):
        FMT.pack(np.zeros((3, 2), dtype=np.int64))


def test_fuzz_decode_packet_never_raises_anything_else(t1):
    """Random bytes, bit flips, truncations and extensions of good packets: each is decoded or
    refused with a PacketError, and the stream goes on decoding afterwards."""
    rng = random.Random(30)
    fmt = PacketFormat.of(t1)
    good = [fmt.pack(np.random.default_rng(i).integers(0, 1024, (n_q, frames)))
            for i, (n_q, frames) in enumerate([(1, 2), (6, 2), (6, 4), (1, 1)])]
    stream = t1.stream_decoder()
    decoded = refused = 0
    for i in range(300):
        base = bytearray(rng.choice(good))
        kind = i % 4
        if kind == 0:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        elif kind == 1:
            base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
            packet = bytes(base)
        elif kind == 2:
            packet = bytes(base[:rng.randrange(len(base))])
        else:
            packet = bytes(base) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4)))
        try:
            out = stream.decode_packet(packet)
            decoded += 1
            assert torch.isfinite(out).all()
        except PacketError:
            refused += 1
    assert decoded > 10 and refused > 100
    assert stream.decode_packet(good[1]).shape[-1] == 2 * t1.hop_length


# -- loss patterns -----------------------------------------------------------------------------


def _bursts(lost: np.ndarray) -> list[int]:
    runs, n = [], 0
    for gone in lost:
        if gone:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs + ([n] if n else [])


@pytest.mark.parametrize("pct, burst", [(5, 1), (20, 1), (10, 3), (20, 3)])
def test_loss_patterns_have_the_asked_rate_and_bursts(pct, burst):
    lost = loss_pattern(200_000, pct, burst, 7)
    assert lost.mean() == pytest.approx(pct / 100, abs=0.01)
    expected = burst if burst > 1 else 1 / (1 - pct / 100)  # independent losses: geometric runs
    assert np.mean(_bursts(lost)) == pytest.approx(expected, rel=0.05)


def test_loss_patterns_are_fixed_by_their_seed():
    assert np.array_equal(loss_pattern(500, 10, 3, 1), loss_pattern(500, 10, 3, 1))
    assert not np.array_equal(loss_pattern(500, 10, 3, 1), loss_pattern(500, 10, 3, 2))
    assert not loss_pattern(500, 0, 3, 1).any()
    with pytest.raises(ValueError, match="0-100"):
        loss_pattern(10, 100)


def test_erasure_masks_erase_whole_packets_in_a_share_of_chunks():
    rng = np.random.default_rng(0)
    mask = erasure_mask(1000, 60, 0.5, 20, 3, 2, rng)
    erased_rows = mask.any(1)
    assert 0.4 < erased_rows.mean() < 0.6
    assert mask[erased_rows].mean() == pytest.approx(0.2, abs=0.03)
    assert np.array_equal(mask[:, 0::2], mask[:, 1::2])            # packets of two frames
    assert erasure_mask(8, 60, 0.0, 20, 3, 2, rng) is None


# -- concealment -------------------------------------------------------------------------------


PERIODS = {"pitch": (2, 1)}   # a code over two frames, refined frame by frame


def _inputs(b=2, d=4, n=40, period=2):
    latent = torch.randn(b, d, n)
    side = torch.randint(1, 8, (b, 2, n))
    silence = (torch.full((1, d, period), -1.0), {"pitch": torch.zeros(1, 2, period, dtype=torch.long)})
    return latent, side, silence


@pytest.mark.parametrize("method", ["repeat", "zero", "learned"])
def test_concealment_leaves_received_frames_and_is_the_same_in_chunks(method):
    latent, side, silence = _inputs()
    lost = torch.from_numpy(loss_pattern(40, 30, 3, 5)).expand(2, -1).clone()
    lost[1] = False
    missing = torch.randn(4)
    whole = conceal(latent, {"pitch": side}, lost, silence, method, missing, PERIODS)
    assert torch.equal(whole[0][~lost[:, None].expand_as(latent)], latent[~lost[:, None].expand_as(latent)])
    assert torch.equal(whole[0][1], latent[1]) and torch.equal(whole[1]["pitch"][1], side[1])
    state, parts = ConcealState(), []
    for start, stop in [(0, 5), (5, 6), (6, 17), (17, 40)]:   # (5: lost, at an odd frame)
        parts.append(conceal(latent[..., start:stop], {"pitch": side[..., start:stop]}, lost[:, start:stop],
                             silence, method, missing, PERIODS, state))
    assert torch.equal(torch.cat([p[0] for p in parts], -1), whole[0])
    assert torch.equal(torch.cat([p[1]["pitch"] for p in parts], -1), whole[1]["pitch"])


def test_repeat_holds_the_last_latent_then_fades_to_silence_and_repeats_the_pitch_code():
    latent, side, silence = _inputs(b=1, n=30)
    lost = torch.zeros(1, 30, dtype=torch.bool)
    lost[0, 4:] = True                                    # frames 4.. lost: the last received is 3
    out, out_symbols = conceal(latent, {"pitch": side}, lost, silence, "repeat", periods=PERIODS)
    out_side = out_symbols["pitch"]
    for f in range(4, 4 + HOLD_FRAMES):
        assert torch.equal(out[..., f], latent[..., 3])
    assert torch.equal(out[..., 4 + HOLD_FRAMES + FADE_FRAMES], silence[0][..., 0])
    assert torch.equal(out_side[:, 0, 4:6], side[:, 0, 2:4])    # the whole last code, by position
    assert torch.equal(out_side[:, 0, 6:8], side[:, 0, 2:4])
    assert (out_side[:, 1, 4:8] == side[:, 1, 3, None]).all()   # the last frame's refinement held
    assert (out_side[..., 4 + HOLD_FRAMES + FADE_FRAMES // 2:] == 0).all()   # then unvoiced


def test_learned_fills_the_missing_latent_for_the_hold_then_the_faded_last_latent_as_repeat():
    latent, side, silence = _inputs(b=1, n=30)
    lost = torch.zeros(1, 30, dtype=torch.bool)
    lost[0, 4:] = True
    missing = torch.randn(4)
    learned, learned_symbols = conceal(latent, {"pitch": side}, lost, silence, "learned", missing, PERIODS)
    repeat, repeat_symbols = conceal(latent, {"pitch": side}, lost, silence, "repeat", periods=PERIODS)
    assert torch.equal(learned[0, :, 4:4 + HOLD_FRAMES], missing[:, None].expand(-1, HOLD_FRAMES))
    assert torch.equal(learned[..., 4 + HOLD_FRAMES:], repeat[..., 4 + HOLD_FRAMES:])
    assert not torch.equal(learned[..., 4 + HOLD_FRAMES], silence[0][..., 0])   # still fading
    assert torch.equal(learned_symbols["pitch"], repeat_symbols["pitch"])


def test_the_learned_missing_latent_gets_the_gradient_of_lost_frames_only():
    latent, side, silence = _inputs(b=1)
    missing = torch.zeros(4, requires_grad=True)
    lost = torch.zeros(1, 40, dtype=torch.bool)
    out, _ = conceal(latent, {"pitch": side}, lost, silence, "learned", missing, PERIODS)
    out.sum().backward()
    assert missing.grad is None or not missing.grad.any()
    missing.grad = None
    lost[0, 10:12] = True
    out, _ = conceal(latent, {"pitch": side}, lost, silence, "learned", missing, PERIODS)
    out.sum().backward()
    assert torch.equal(missing.grad, torch.full((4,), 2.0))


# -- the packet API ----------------------------------------------------------------------------


def _packets(codec: Codec, audio: np.ndarray, bitrate: int, frames: int = 2) -> list[bytes]:
    size = frames * codec.hop_length
    audio = np.pad(audio, (0, -len(audio) % size))
    encoder = codec.stream_encoder(bitrate)
    packets = [encoder.encode_packet(audio[i:i + size]) for i in range(0, len(audio), size)]
    return [p for p in packets + encoder.flush_packets() if p]


@pytest.mark.parametrize("bitrate, frames", [(1000, 2), (6000, 1), (6000, 4)])
def test_packets_carry_the_tokens_and_decode_as_the_codec_does(t1, bitrate, frames):
    audio = speechlike(1.0)
    packets = _packets(t1, audio, bitrate, frames)
    tokens = t1.encode(audio, bitrate)
    fmt = PacketFormat.of(t1)
    assert np.array_equal(np.concatenate([fmt.unpack(p) for p in packets], -1)[:, :tokens.shape[-1]],
                          tokens[0].numpy())
    decoder = t1.stream_decoder()
    out = torch.cat([decoder.decode_packet(p) for p in packets] + [decoder.flush(len(audio))], -1)
    assert torch.allclose(out, t1.decode(tokens), atol=1e-5)


def test_a_track_2_encoder_sends_its_first_packet_late_and_loses_no_frame():
    t2 = Codec.pretrained("t2")
    audio = speechlike(0.5)
    encoder = t2.stream_encoder(6000)
    first = encoder.encode_packet(audio[:480])
    assert first == b""                                  # two frames of look-ahead held back
    packets = [encoder.encode_packet(audio[i:i + 480]) for i in range(480, 11520, 480)]
    packets += encoder.flush_packets()
    fmt = PacketFormat.of(t2)
    frames = np.concatenate([fmt.unpack(p) for p in packets if p], -1)
    assert np.array_equal(frames, t2.encode(audio[:11520], 6000)[0].numpy())


def test_lost_packets_give_audio_of_their_length_and_the_decoder_recovers(t1):
    audio = speechlike(2.0)
    packets = _packets(t1, audio, 6000)
    lossless = t1.stream_decoder()
    reference = torch.cat([lossless.decode_packet(p) for p in packets], -1)[0, 0]
    lost = np.zeros(len(packets), dtype=bool)
    lost[20:24] = True                                   # 80 ms lost at 0.4 s
    hop, outs = t1.hop_length, {}
    for method in ("repeat", "zero"):
        decoder = t1.stream_decoder(conceal=method)
        parts = [decoder.decode_packet(None if gone else p) for p, gone in zip(packets, lost)]
        assert all(part.shape[-1] == 2 * hop for part in parts[1:])
        outs[method] = torch.cat(parts, -1)[0, 0]
        assert torch.isfinite(outs[method]).all()
    def rms(x, start, stop):
        return float(x[start * 2 * hop:stop * 2 * hop].square().mean().sqrt())
    level = rms(reference, 20, 24)
    # no concealment: silence inside the gap (its last packet's frames already hear the next
    # packet through the decoder's look-ahead)
    assert rms(outs["zero"], 21, 23) < 0.1 * level
    assert rms(outs["repeat"], 20, 24) > 0.3 * level     # concealed: speech goes on
    for method, out in outs.items():                     # 300 ms later, the level is back
        assert rms(out, 40, 60) == pytest.approx(rms(reference, 40, 60), rel=0.1), method


def test_loss_decoding_takes_token_blocks_as_they_come(t1):
    """decode_blocks_with_loss (the file path of --simulate-loss): blocks of any size give the
    audio of the whole array, and it reads no further ahead than the packet it decodes."""
    from lrac.compress import LossSimulation, decode_blocks_with_loss, decode_with_loss, lost_packets

    audio = speechlike(1.5)
    tokens = t1.encode(audio, 6000)[0].numpy()
    loss = LossSimulation(30, burst=2, seed=3, packet_ms=30)
    whole, lost = decode_with_loss(t1, tokens, len(audio), loss)
    assert len(whole) == len(audio) and len(lost) == -(-tokens.shape[-1] // 3) and lost.any()
    read = []

    def blocks():
        for start in range(0, tokens.shape[-1], 7):
            read.append(start)
            yield tokens[:, start:start + 7]

    stream = decode_blocks_with_loss(t1, blocks(), len(audio), loss, lost_packets(t1, tokens.shape[-1], loss))
    first = next(stream)
    assert read == [0]                                    # one block read for the first packet
    assert np.array_equal(np.concatenate([first, *stream]), whole)
    with pytest.raises(ValueError, match="1-4 frames"):
        lost_packets(t1, 100, LossSimulation(10, packet_ms=25))


def test_decode_packet_refusals(t1):
    with pytest.raises(ValueError, match="unknown concealment"):
        t1.stream_decoder(conceal="guess")
    with pytest.raises(ValueError, match="1-4 frames"):
        t1.stream_decoder().decode_packet(None, frames=5)
    with pytest.raises(ValueError, match="whole frames"):
        t1.stream_encoder(6000).encode_packet(np.zeros(300, dtype=np.float32))
    with pytest.raises(ValueError, match="one stream at a time"):
        t1.stream_decoder(batch_size=2).decode_packet(None)


def test_old_model_files_load_with_a_zero_missing_latent(tmp_path):
    codec = Codec("t1")
    codec.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=False)
    del state["generator"]["decoder.missing_latent"]
    # a file of an lrac before packets: its id was computed from the weights it stores
    state["model_id"] = model_identity(state["config"], state["generator"]).hex()
    torch.save(state, tmp_path / "old.pt")
    old = Codec.load(tmp_path / "old.pt")
    assert old.model_id.hex() == state["model_id"]       # its .lrac files still name it
    assert torch.equal(old.decoder.missing_latent, torch.zeros(codec.config.model.latent_dim))
    assert old.default_concealment == "repeat"           # an untrained missing latent is only zeros
    with torch.no_grad():
        old.decoder.missing_latent[0] = 0.01
    assert old.default_concealment == "learned"

"""Streaming equals one pass, for random chunk sizes down to single samples / frames."""

import numpy as np
import pytest
import torch

import lrac
from lrac.models.conv import SConv1d, SConvTranspose1d
from lrac.models.streaming import StreamSession


def _random_chunks(total: int, high: int, rng: np.random.Generator):
    i = 0
    while i < total:
        n = int(rng.integers(0, high))  # 0-length chunks are allowed too
        yield slice(i, min(total, i + n))
        i += n


@pytest.mark.parametrize("preset", ["baseline-t1", "baseline-t2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_equals_one_pass(preset, seed):
    rng = np.random.default_rng(seed)
    codec = lrac.Codec(preset)
    x = torch.from_numpy(rng.standard_normal(24000 + int(rng.integers(1, 480))).astype(np.float32)) * 0.3
    tokens = codec.encode(x, 6000)
    wav = codec.decode(tokens, length=len(x))

    enc = codec.stream_encoder(6000)
    parts = [enc.push(x[s]) for s in _random_chunks(len(x), 1200, rng)] + [enc.flush()]
    assert torch.equal(torch.cat(parts, -1), tokens)

    dec = codec.stream_decoder()
    parts = [dec.push(tokens[..., s]) for s in _random_chunks(tokens.shape[-1], 6, rng)]
    parts.append(dec.flush(len(x)))
    streamed = torch.cat(parts, -1)
    assert streamed.shape == wav.shape
    assert (streamed - wav).abs().max() <= 1e-5


def test_single_frame_chunks():
    codec = lrac.Codec("baseline-t1")
    x = torch.randn(240 * 30) * 0.3
    tokens = codec.encode(x, 1000)
    enc = codec.stream_encoder(1000)
    parts = [enc.push(x[i:i + 240]) for i in range(0, len(x), 240)] + [enc.flush()]
    assert torch.equal(torch.cat(parts, -1), tokens)


def test_layers_stream_with_overlap_and_lookahead():
    torch.manual_seed(3)
    net = torch.nn.Sequential(SConv1d(3, 4, 5, dilation=2, lookahead=True), SConv1d(4, 4, 4, stride=2),
                              SConvTranspose1d(4, 2, 6, 2))
    x = torch.randn(2, 3, 64)
    ref = net(x)
    session = StreamSession(net, batch_size=2)
    parts = [session(x[..., i:i + 5]) for i in range(0, 64, 5)] + [session.flush(x[..., :0])]
    assert torch.allclose(torch.cat(parts, -1), ref, atol=1e-6)


def test_sessions_are_independent():
    codec = lrac.Codec("baseline-t1")
    a, b = torch.randn(4800) * 0.3, torch.randn(4800) * 0.3
    sa, sb = codec.stream_encoder(6000), codec.stream_encoder(6000)
    out_a, out_b = [], []
    for i in range(0, 4800, 480):  # interleave two streams on one model
        out_a.append(sa.push(a[i:i + 480]))
        out_b.append(sb.push(b[i:i + 480]))
    out_a.append(sa.flush())
    out_b.append(sb.flush())
    assert torch.equal(torch.cat(out_a, -1), codec.encode(a, 6000))
    assert torch.equal(torch.cat(out_b, -1), codec.encode(b, 6000))


def test_flush_twice_is_refused():
    enc = lrac.Codec("baseline-t1").stream_encoder(6000)
    enc.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        enc.flush()


@pytest.mark.parametrize("preset", ["baseline-t1", "t1"])
def test_exact_loaded_codec_streams_whole_frames(tmp_path, preset):
    """A model loaded for inference (float64 send side) streams a length of whole frames, whose
    flush has no padding to add, to the same tokens as one pass."""
    lrac.Codec(preset).save(tmp_path / "m.pt")
    codec = lrac.Codec.load(tmp_path / "m.pt")
    assert codec.encode_dtype == torch.float64
    x = torch.randn(240 * 20) * 0.3
    enc = codec.stream_encoder(6000)
    parts = [enc.push(x[i:i + 480]) for i in range(0, len(x), 480)] + [enc.flush()]
    assert torch.equal(torch.cat(parts, -1), codec.encode(x, 6000))
    dec = codec.stream_decoder()
    tokens = codec.encode(x, 6000)
    out = torch.cat([dec.push(tokens[..., :7]), dec.push(tokens[..., 7:]), dec.flush(len(x))], -1)
    assert (out - codec.decode(tokens)).abs().max() <= 1e-5

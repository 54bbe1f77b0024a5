"""ONNX export (lrac/export.py) and the onnxruntime engine (lrac/runtime.py) against the PyTorch
streaming path: random push sizes, state reset between streams, cross-engine .lrac files, and
one-line errors for corrupted or mismatched graph files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lrac
from lrac.codec import PRETRAINED_DIR

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lrac.runtime import SIDECAR, ModelFileError, OnnxCodec  # noqa: E402

from conftest import PLAIN_HEAD, REPO  # noqa: E402

# a small untrained frame model without the pitch path: few layers, few branches, a quick export
SMALL = ["model.frame.encoder_layers=2", "model.frame.decoder_layers=2", "model.frame.encoder_dim=32",
         "model.frame.decoder_dim=32", "model.latent_dim=16", "model.frame.encoder_lookahead_frames=1",
         *PLAIN_HEAD]


def _speech(seconds: float) -> np.ndarray:
    audio, _ = lrac.audio.load_audio(REPO / "examples" / "p238_165.flac", 24000)
    return audio[: int(seconds * 24000)]


def _torch_stream(codec: lrac.Codec, audio: np.ndarray, bitrate_bps: int, rng: np.random.Generator):
    """Tokens [n_q, F] and their decoded audio from the PyTorch streaming path, random chunks."""
    enc = codec.stream_encoder(bitrate_bps)
    parts, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 1500))
        parts.append(enc.push(torch.from_numpy(audio[i:i + n])))
        i += n
    tokens = torch.cat(parts + [enc.flush()], -1)
    dec = codec.stream_decoder()
    wav = torch.cat([dec.push(tokens[..., i:i + 3]) for i in range(0, tokens.shape[-1], 3)]
                    + [dec.flush(len(audio))], -1)
    return tokens[0].numpy(), wav[0, 0].numpy()


def _onnx_stream(codec: OnnxCodec, audio: np.ndarray, tokens: np.ndarray, bitrate_bps: int,
                 rng: np.random.Generator):
    enc = codec.stream_encoder(bitrate_bps)
    parts, i = [], 0
    while i < len(audio):
        n = int(rng.integers(0, 1500))    # empty pushes too
        parts.append(enc.push(audio[i:i + n]))
        i += n
    out_tokens = np.concatenate(parts + [enc.flush()], -1)
    dec = codec.stream_decoder()
    parts, i = [], 0
    while i < tokens.shape[-1]:
        n = int(rng.integers(0, 7))
        parts.append(dec.push(tokens[:, i:i + n]))
        i += n
    return out_tokens, np.concatenate(parts + [dec.flush(len(audio))])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(torch codec in float32, export folder) of the small model, exported by ``lrac-export``."""
    from lrac.cli.export import main

    folder = tmp_path_factory.mktemp("small")
    torch.manual_seed(0)
    codec = lrac.Codec(lrac.load_config("t1", SMALL))
    codec.save(folder / "small.pt")
    result = CliRunner().invoke(main, [str(folder / "small.pt"), str(folder / "onnx"), "--chunk-frames", "3"])
    assert result.exit_code == 0, result.output
    return lrac.Codec.load(folder / "small.pt", exact=False), folder / "onnx"


@pytest.mark.parametrize("n", [480, 800, 6, 90])
def test_real_dfts_in_two_stages_match_numpy(n):
    """The export's real DFTs of lengths that are not powers of two (rfft_stages, irfft_stages),
    applied as the graphs apply them, equal numpy's FFTs to float64 rounding."""
    from lrac.export import irfft_stages, rfft_stages
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, n))
    first, second = rfft_stages(n)
    n2 = first.shape[1]
    n1, k1 = n // n2, second.shape[-1] // 2
    a = (first @ x.reshape(2, n2, n1)).reshape(2, 2, n2, n1).transpose(0, 2, 1, 3).reshape(2, n2, 1, 2 * n1)
    spectrum = (a @ second).reshape(2, n2, 2, k1).transpose(0, 3, 1, 2).reshape(2, k1 * n2, 2)[:, : n // 2 + 1]
    assert np.abs(spectrum[..., 0] + 1j * spectrum[..., 1] - np.fft.rfft(x)).max() < 1e-10 * n
    spectrum = rng.standard_normal((2, n // 2 + 1, 2))
    first, second = irfft_stages(n)
    k1, k2, n1 = first.shape[0], first.shape[1] // 2, first.shape[2] // 2
    padded = np.concatenate([spectrum, np.zeros((2, k1 * k2 - n // 2 - 1, 2))], 1)
    rows = padded.reshape(2, k2, k1, 2).transpose(0, 2, 3, 1).reshape(2, k1, 1, 2 * k2)
    y = (rows @ first).reshape(2, k1, 2, n1).transpose(0, 3, 2, 1).reshape(2, n1, 1, 2 * k1)
    out = (y @ second).reshape(2, n1, -1).transpose(0, 2, 1).reshape(2, n) / n
    assert np.abs(out - np.fft.irfft(spectrum[..., 0] + 1j * spectrum[..., 1], n)).max() < 1e-12 * n


@pytest.mark.parametrize("bitrate", [1000, 6000])
def test_graphs_follow_the_torch_streaming_path(small, bitrate):
    codec, folder = small
    rng = np.random.default_rng(bitrate)
    audio = _speech(2.0)
    ref_tokens, ref_audio = _torch_stream(codec, audio, bitrate, rng)
    onnx_codec = OnnxCodec(folder)
    tokens, decoded = _onnx_stream(onnx_codec, audio, ref_tokens, bitrate, rng)
    assert tokens.shape == ref_tokens.shape
    assert (tokens == ref_tokens).all(0).mean() >= 0.99
    assert decoded.shape == ref_audio.shape
    assert np.abs(decoded - ref_audio).max() < 1e-4


def test_audio_beyond_full_scale_is_clipped_as_in_pytorch(small):
    """Both engines take audio by one rule: float samples clipped to [-1, 1] (with a warning), int16
    PCM scaled; unclipped loud frames coded other tokens than PyTorch's."""
    codec, folder = small
    onnx_codec = OnnxCodec(folder)
    loud = 4 * _speech(1.0)
    with pytest.warns(UserWarning, match="clipped"):
        ref = codec.encode(loud, 6000)[0].numpy()
    with pytest.warns(UserWarning, match="clipped"):
        tokens = onnx_codec.encode(loud, 6000, chunk_samples=240)
    assert (tokens == ref).all(0).mean() >= 0.99
    pcm = np.round(_speech(1.0) * 32767).astype(np.int16)
    assert np.array_equal(onnx_codec.encode(pcm, 6000), onnx_codec.encode(pcm / np.float32(32768), 6000))
    with pytest.raises(TypeError, match="int16"):
        onnx_codec.encode(pcm.astype(np.int32), 6000)

def test_int8_graphs_stay_close(small):
    codec, folder = small
    audio = _speech(1.0)
    ref_tokens, ref_audio = _torch_stream(codec, audio, 6000, np.random.default_rng(0))
    int8 = OnnxCodec(folder, variant="int8")
    decoded = int8.decode(ref_tokens, len(audio))
    assert int8.encode(audio, 6000).shape == ref_tokens.shape
    # 8-bit weights change the audio a little, not the signal
    assert np.corrcoef(decoded, ref_audio)[0, 1] > 0.9


def test_streams_start_from_a_clean_state(small):
    _, folder = small
    codec = OnnxCodec(folder)
    a, b = _speech(1.0), _speech(2.0)[24000:]
    first = codec.encode(a, 6000)
    codec.encode(b, 6000)                      # another stream in between
    assert np.array_equal(codec.encode(a, 6000), first)
    # two streams interleaved keep their own states
    s1, s2 = codec.stream_encoder(6000), codec.stream_encoder(6000)
    parts = []
    for i in range(0, len(a), 960):
        parts.append(s1.push(a[i:i + 960]))
        s2.push(b[i:i + 960])
    assert np.array_equal(np.concatenate(parts + [s1.flush()], -1), first)
    dec = codec.stream_decoder()
    dec.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        dec.push(first)


def test_lrac_files_decode_with_either_engine(small, tmp_path):
    from lrac.compress import decode_file, encode_file
    codec, folder = small
    onnx_codec = OnnxCodec(folder)
    wav = tmp_path / "in.wav"
    lrac.audio.write_audio(wav, _speech(1.0), 24000)
    encode_file(codec, wav, tmp_path / "torch.lrac", 6000)
    encode_file(onnx_codec, wav, tmp_path / "onnx.lrac", 6000)
    torch_bytes, onnx_bytes = (tmp_path / "torch.lrac").read_bytes(), (tmp_path / "onnx.lrac").read_bytes()
    assert len(torch_bytes) == len(onnx_bytes) and torch_bytes[:28] == onnx_bytes[:28]   # same header
    decode_file(onnx_codec, tmp_path / "torch.lrac", tmp_path / "a.wav")
    decode_file(codec, tmp_path / "onnx.lrac", tmp_path / "b.wav")
    a, _ = lrac.audio.load_audio(tmp_path / "a.wav", 24000)
    b, _ = lrac.audio.load_audio(tmp_path / "b.wav", 24000)
    assert len(a) == len(b) == 24000


def test_bad_input_is_refused(small):
    _, folder = small
    codec = OnnxCodec(folder)
    with pytest.raises(ValueError, match="unsupported bitrate 3000"):
        codec.stream_encoder(3000)
    with pytest.raises(ValueError, match="NaN"):
        codec.stream_encoder(6000).push(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="token values"):
        codec.stream_decoder().push(np.full((6, 2), 5000))
    with pytest.raises(ValueError, match="unsupported bitrate 4000"):   # 4 stages
        codec.stream_decoder().push(np.zeros((4, 2), dtype=np.int64))


def _broken_copy(folder, tmp_path, change):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    change(copy)
    return copy


def test_corrupted_or_mismatched_files_give_one_line_errors(small, tmp_path):
    _, folder = small

    def flip(copy):
        data = bytearray((copy / "float32" / "weights.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / "float32" / "weights.bin").write_bytes(bytes(data))

    def swap(copy):   # an encoder graph where a decoder graph belongs, checksum updated to match
        import hashlib
        shutil.copy(copy / "float32" / "encoder.0.onnx", copy / "float32" / "decoder.0.onnx")
        meta = json.loads((copy / SIDECAR).read_text())
        meta["files"]["float32/decoder.0.onnx"] = hashlib.sha256((copy / "float32" / "decoder.0.onnx").read_bytes()).hexdigest()
        (copy / SIDECAR).write_text(json.dumps(meta))

    def truncate(copy):
        (copy / SIDECAR).write_text((copy / SIDECAR).read_text()[:50])

    for change, message in ((flip, "corrupted"), (swap, "another model or side"), (truncate, "unreadable"),
                            (lambda c: (c / "float32" / "encoder.1.onnx").unlink(), "not found")):
        broken = _broken_copy(folder, tmp_path / change.__name__, change)
        with pytest.raises(ModelFileError, match=message) as info:
            OnnxCodec(broken)
        assert "\n" not in str(info.value)
    with pytest.raises(ModelFileError, match="no lrac-onnx.json"):
        OnnxCodec(tmp_path)


def test_cli_engine_onnx(small, tmp_path):
    from lrac.cli.decode import main as decode
    from lrac.cli.encode import main as encode
    codec, folder = small
    wav = tmp_path / "in.wav"
    lrac.audio.write_audio(wav, _speech(0.5), 24000)
    runner = CliRunner()
    result = runner.invoke(encode, [str(wav), str(tmp_path / "x.lrac"), "--engine", "onnx", "--model", str(folder)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(decode, [str(tmp_path / "x.lrac"), str(tmp_path / "x.wav"), "--engine", "onnx-int8",
                                    "--model", str(folder)])
    assert result.exit_code == 0, result.output
    assert lrac.audio.load_audio(tmp_path / "x.wav", 24000)[0].shape == (12000,)
    broken = _broken_copy(folder, tmp_path, lambda c: (c / "float32" / "encoder.0.onnx").write_bytes(b"not onnx"))
    result = runner.invoke(encode, [str(wav), str(tmp_path / "y.lrac"), "--engine", "onnx", "--model", str(broken)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


@pytest.mark.slow
def test_lowband_model_exports_and_agrees(tmp_path):
    """A small untrained model with the pitch path and the low-band code (held-back frames, a first
    token position without a code): the graphs follow PyTorch at random chunk sizes, and a stream
    after another starts clean."""
    torch.manual_seed(0)
    settings = [s for s in SMALL if s not in PLAIN_HEAD] + ["model.frame.lowband={}"]
    codec = lrac.Codec(lrac.load_config("t1", settings))
    codec.save(tmp_path / "lowband.pt")
    codec = lrac.Codec.load(tmp_path / "lowband.pt", exact=False)
    codec.export_onnx(tmp_path / "onnx", chunk_frames=(3,), bitrates_bps=[6000])
    onnx_codec = OnnxCodec(tmp_path / "onnx")
    audio = _speech(2.0)
    rng = np.random.default_rng(2)
    ref_tokens, ref_audio = _torch_stream(codec, audio, 6000, rng)
    rows = codec.layout.rows_carried("lowband", 6)
    assert rows == 2 and (ref_tokens[-rows:] > 0).any(0).mean() > 0.3     # the low band is coded
    for _ in range(2):     # the second stream starts from the start layout again
        tokens, decoded = _onnx_stream(onnx_codec, audio, ref_tokens, 6000, rng)
        assert (tokens == ref_tokens).all(0).mean() >= 0.99
        assert np.abs(decoded - ref_audio).max() < 1e-4


@pytest.mark.slow
def test_shipped_t1_exports_and_agrees(tmp_path):
    """The shipped t1 (pitch path, look-ahead decoder): tokens and audio as the PyTorch float32
    streaming path's on a speech clip."""
    codec = lrac.Codec.load(PRETRAINED_DIR / "t1.pt", exact=False)
    codec.export_onnx(tmp_path, chunk_frames=(1,), bitrates_bps=[6000])   # (4-frame chunks: the small model)
    onnx_codec = OnnxCodec(tmp_path)
    audio = _speech(2.0)
    rng = np.random.default_rng(1)
    ref_tokens, ref_audio = _torch_stream(codec, audio, 6000, rng)
    tokens, decoded = _onnx_stream(onnx_codec, audio, ref_tokens, 6000, rng)
    assert (tokens == ref_tokens).all(0).mean() >= 0.99
    assert np.abs(decoded - ref_audio).max() < 1e-3

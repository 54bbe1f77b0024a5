"""The TVM engine (lrac/tvm_engine.py) against onnxruntime on a small untrained model's export:
same tokens, same audio, clean state per stream, onnxruntime fallback for a graph TVM did not
compile, and one-line errors for corrupted libraries or a missing TVM."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lrac

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'lrac[tvm]')")

from lrac.runtime import ModelFileError, OnnxCodec  # noqa: E402
from lrac.tvm_engine import TVM_SIDECAR, TvmCodec  # noqa: E402

from conftest import PLAIN_HEAD, REPO  # noqa: E402

# the small frame model of test_export.py, one chunk size (1 frame): few graphs, a quick compile
SMALL = ["model.frame.encoder_layers=2", "model.frame.decoder_layers=2", "model.frame.encoder_dim=32",
         "model.frame.decoder_dim=32", "model.latent_dim=16", "model.frame.encoder_lookahead_frames=1",
         *PLAIN_HEAD]


def _speech(seconds: float) -> np.ndarray:
    audio, _ = lrac.audio.load_audio(REPO / "examples" / "p238_165.flac", 24000)
    return audio[: int(seconds * 24000)]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The export folder of the small model, exported and compiled by ``lrac-export --tvm``."""
    from lrac.cli.export import main

    folder = tmp_path_factory.mktemp("small_tvm")
    torch.manual_seed(0)
    lrac.Codec(lrac.load_config("t1", SMALL)).save(folder / "small.pt")
    result = CliRunner().invoke(main, [str(folder / "small.pt"), str(folder / "onnx"), "--chunk-frames", "1",
                                       "--variant", "float32", "--tvm"])
    assert result.exit_code == 0, result.output
    assert (folder / "onnx" / "tvm" / TVM_SIDECAR).is_file()
    return folder / "onnx"


def _copy(folder, tmp_path, change=None):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    if change:
        change(copy)
    return copy


def _stream(codec, audio: np.ndarray, push: int, tokens: np.ndarray | None = None):
    """Tokens of ``audio`` pushed ``push`` samples at a time, and the audio of ``tokens`` (default:
    those) decoded a frame at a time."""
    enc = codec.stream_encoder(6000)
    out = np.concatenate([enc.push(audio[i:i + push]) for i in range(0, len(audio), push)] + [enc.flush()], -1)
    tokens = out if tokens is None else tokens
    dec = codec.stream_decoder()
    wav = np.concatenate([dec.push(tokens[:, i:i + 1]) for i in range(tokens.shape[1])] + [dec.flush(len(audio))])
    return out, wav


@pytest.mark.parametrize("push", [240, 1000])
def test_tvm_matches_onnxruntime(small, push):
    audio = _speech(1.5)
    ort_tokens, ort_audio = _stream(OnnxCodec(small), audio, push)
    codec = TvmCodec(small)
    tokens, wav = _stream(codec, audio, push, ort_tokens)
    assert np.array_equal(tokens, ort_tokens)
    assert wav.shape == ort_audio.shape
    assert np.abs(wav - ort_audio).max() < 1e-5


def test_streams_start_from_a_clean_state(small):
    codec = TvmCodec(small)
    a, b = _speech(1.0), _speech(2.0)[24000:]
    first, first_audio = _stream(codec, a, 240)
    _stream(codec, b, 480)                        # another stream in between
    again, again_audio = _stream(codec, a, 240)
    assert np.array_equal(again, first) and np.array_equal(again_audio, first_audio)
    s1, s2 = codec.stream_encoder(6000), codec.stream_encoder(6000)   # interleaved streams
    parts = []
    for i in range(0, len(a), 960):
        parts.append(s1.push(a[i:i + 960]))
        s2.push(b[i:i + 960])
    assert np.array_equal(np.concatenate(parts + [s1.flush()], -1), first)


def test_a_graph_left_to_onnxruntime_warns_and_agrees(small, tmp_path):
    """A streaming graph TVM could not compile runs in onnxruntime, with a warning; a flush graph
    (a chunk of 0 frames, once a stream) runs there without one."""
    meta = json.loads((small / "tvm" / TVM_SIDECAR).read_text())
    branches = OnnxCodec(small).meta["decoder"]["branches"]
    steady = next(b["graph"] for b in branches if b["frames"] > 0 and "error" not in meta["graphs"][b["graph"]])
    flush = next(b["graph"] for b in branches if b["frames"] == 0)

    def left_to_onnxruntime(graph):
        def change(copy):
            m = json.loads((copy / "tvm" / TVM_SIDECAR).read_text())
            m["graphs"][graph] = {"side": "decoder", "onnx_sha256": m["graphs"][graph]["onnx_sha256"],
                                  "error": "(test) not compiled"}
            (copy / "tvm" / TVM_SIDECAR).write_text(json.dumps(m))
        return change

    copy = _copy(small, tmp_path / "steady", left_to_onnxruntime(steady))
    with pytest.warns(UserWarning, match=f"run in onnxruntime.*{steady}"):
        codec = TvmCodec(copy)
    audio = _speech(1.0)
    ort_tokens, ort_audio = _stream(OnnxCodec(small), audio, 240)
    tokens, wav = _stream(codec, audio, 240, ort_tokens)
    assert np.array_equal(tokens, ort_tokens) and np.abs(wav - ort_audio).max() < 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codec = TvmCodec(_copy(small, tmp_path / "flush", left_to_onnxruntime(flush)))
    assert not any(flush in str(w.message) for w in caught)
    assert np.array_equal(_stream(codec, audio, 240)[0], ort_tokens)


def test_corrupted_files_give_one_line_errors(small, tmp_path):
    meta = json.loads((small / "tvm" / TVM_SIDECAR).read_text())
    library = next(e["library"] for e in meta["graphs"].values() if "library" in e)

    def corrupt(copy):
        path = copy / "tvm" / library
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    copy = _copy(small, tmp_path, corrupt)
    with pytest.raises(ModelFileError, match="corrupted") as err:
        codec = TvmCodec(copy)
        _stream(codec, _speech(0.5), 240)
    assert "\n" not in str(err.value) and library in str(err.value)
    # through the command line: one line, exit code 2
    from lrac.cli.encode import main as encode
    wav = tmp_path / "in.wav"
    lrac.audio.write_audio(wav, _speech(0.5), 24000)
    result = CliRunner().invoke(encode, [str(wav), str(tmp_path / "x.lrac"), "--engine", "tvm", "--model", str(copy)])
    assert result.exit_code == 2
    lines = result.output.splitlines()   # (a warning line before it if some graphs run in onnxruntime)
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:] and "corrupted" in lines[-1]


def test_cli_engine_tvm_writes_the_onnx_engines_files(small, tmp_path):
    from lrac.cli.decode import main as decode
    from lrac.cli.encode import main as encode
    wav = tmp_path / "in.wav"
    lrac.audio.write_audio(wav, _speech(0.5), 24000)
    runner = CliRunner()
    for engine in ("onnx", "tvm"):
        result = runner.invoke(encode, [str(wav), str(tmp_path / f"{engine}.lrac"), "--engine", engine,
                                        "--model", str(small)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "tvm.lrac").read_bytes() == (tmp_path / "onnx.lrac").read_bytes()
    result = runner.invoke(decode, [str(tmp_path / "tvm.lrac"), str(tmp_path / "x.wav"), "--engine", "tvm",
                                    "--model", str(small)])
    assert result.exit_code == 0, result.output
    assert lrac.audio.load_audio(tmp_path / "x.wav", 24000)[0].shape == (12000,)


def test_missing_tvm_is_one_line(small, tmp_path, monkeypatch):
    from lrac.cli.encode import main as encode
    monkeypatch.setitem(sys.modules, "tvm", None)   # import tvm now raises ImportError
    with pytest.raises(ModelFileError, match=r"lrac\[tvm\]"):
        TvmCodec(small)
    wav = tmp_path / "in.wav"
    lrac.audio.write_audio(wav, _speech(0.2), 24000)
    result = CliRunner().invoke(encode, [str(wav), str(tmp_path / "x.lrac"), "--engine", "tvm", "--model", str(small)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "lrac[tvm]" in result.output

"""lrac-encode / lrac-decode end to end, including every bad input the issue lists."""

import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from lrac import bitstream
from lrac.codec import Codec
from lrac.compress import decode_file
from lrac.cli.decode import main as decode_main
from lrac.cli.encode import main as encode_main
from click.testing import CliRunner

from conftest import speechlike


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A baseline-t1 model whose codebooks were initialised on speech-like audio (as in training:
    at least as many frames as codes, so k-means gives distinct codes and no exact ties)."""
    codec = Codec("baseline-t1")
    codec.generator.train()
    with torch.no_grad():
        codec.generator(torch.from_numpy(np.stack([speechlike(2.6, seed=s) for s in range(4)]))[:, None], 6)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    codec.save(path)
    return str(path)


def run(main, args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "in.wav"
    sf.write(path, speechlike(1.3), 24000)
    return path


def test_round_trip_file(tmp_path, wav, model):
    code, _ = run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model, "--bitrate", "1"])
    assert code == 0
    data = (tmp_path / "x.lrac").read_bytes()
    frames = -(-int(1.3 * 24000) // 240)
    assert len(data) == 32 + -(-frames * 10 // 8)
    header, _ = bitstream.loads(data)
    assert header.bitrate_bps == 1000 and header.num_samples == int(1.3 * 24000)
    code, _ = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "y.wav"), "--model", model])
    assert code == 0
    info = sf.info(tmp_path / "y.wav")
    assert info.samplerate == 24000 and info.subtype == "PCM_16" and info.frames == int(1.3 * 24000)


def test_chunked_paths_match_default(tmp_path, wav, model):
    run(encode_main, [str(wav), str(tmp_path / "a.lrac"), "--model", model])
    run(encode_main, [str(wav), str(tmp_path / "b.lrac"), "--model", model, "--chunk-ms", "13"])
    assert (tmp_path / "a.lrac").read_bytes() == (tmp_path / "b.lrac").read_bytes()
    run(decode_main, [str(tmp_path / "a.lrac"), str(tmp_path / "a.wav"), "--model", model])
    run(decode_main, [str(tmp_path / "a.lrac"), str(tmp_path / "b.wav"), "--model", model, "--chunk-ms", "30"])
    a = sf.read(tmp_path / "a.wav", dtype="int16")[0].astype(int)
    b = sf.read(tmp_path / "b.wav", dtype="int16")[0].astype(int)
    assert len(a) == len(b) and np.abs(a - b).max() <= 1


def test_any_rate_stereo_and_format(tmp_path, model):
    stereo = np.stack([speechlike(1.0, 44100), speechlike(1.0, 44100, seed=1)], axis=1)
    sf.write(tmp_path / "s.flac", stereo, 44100)
    code, out = run(encode_main, [str(tmp_path / "s.flac"), str(tmp_path / "s.lrac"), "--model", model])
    assert code == 0 and "averaged to mono" in out
    header, _ = bitstream.loads((tmp_path / "s.lrac").read_bytes())
    assert header.num_samples == 24000


def test_output_sample_rate(tmp_path, wav, model):
    run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model])
    code, _ = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "y.wav"), "--model", model,
                                "--sample-rate", "16000"])
    assert code == 0 and sf.info(tmp_path / "y.wav").samplerate == 16000
    assert sf.info(tmp_path / "y.wav").frames == round(1.3 * 16000)
    for bad in ("7", "1000000000"):   # a rate no speech file has: one line, no file
        code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "z.wav"), "--model", model,
                                      "--sample-rate", bad])
        assert code == 2 and "--sample-rate must be 8000-384000 Hz" in out and not (tmp_path / "z.wav").exists()
    with pytest.raises(ValueError, match="output sample rate must be 8000-384000 Hz, got 7"):   # the library too
        decode_file(Codec.load(model), tmp_path / "x.lrac", tmp_path / "z.wav", sample_rate=7)
    assert not (tmp_path / "z.wav").exists()


def test_folder_and_scp_batches(tmp_path, model):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", speechlike(0.5), 24000)
    sf.write(src / "sub" / "b.flac", speechlike(0.7, 16000), 16000)
    code, _ = run(encode_main, [str(src), str(tmp_path / "enc"), "--model", model])
    assert code == 0
    assert (tmp_path / "enc" / "a.lrac").is_file() and (tmp_path / "enc" / "sub" / "b.lrac").is_file()
    code, _ = run(decode_main, [str(tmp_path / "enc"), str(tmp_path / "dec"), "--model", model])
    assert code == 0 and (tmp_path / "dec" / "sub" / "b.wav").is_file()
    scp = tmp_path / "wav.scp"
    scp.write_text(f"utt1 {src / 'a.wav'}\nutt2 {src / 'sub' / 'b.flac'}\n")
    code, _ = run(encode_main, [str(scp), str(tmp_path / "enc2"), "--model", model])
    assert code == 0 and sorted(p.name for p in (tmp_path / "enc2").iterdir()) == ["utt1.lrac", "utt2.lrac"]


def _bad_inputs(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 24000)
    nan = speechlike(0.2)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 24000, subtype="FLOAT")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF1234WAVEjunkjunk")
    return {"missing": (tmp_path / "nope.wav", "not found"), "empty": (tmp_path / "empty.wav", "empty"),
            "nan": (tmp_path / "nan.wav", "NaN"), "garbage": (tmp_path / "garbage.wav", "cannot read")}


@pytest.mark.parametrize("case", ["missing", "empty", "nan", "garbage"])
def test_encode_bad_input_one_line_exit_2(tmp_path, model, case):
    path, message = _bad_inputs(tmp_path)[case]
    code, out = run(encode_main, [str(path), str(tmp_path / "o.lrac"), "--model", model])
    assert code == 2 and message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_decode_bad_bitstreams(tmp_path, wav, model):
    run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model])
    good = (tmp_path / "x.lrac").read_bytes()
    cases = {"truncated": good[:-3], "corrupted": good[:40] + bytes([good[40] ^ 1]) + good[41:],
             "garbage": b"hello world" * 10}
    for name, data in cases.items():
        (tmp_path / f"{name}.lrac").write_bytes(data)
        code, out = run(decode_main, [str(tmp_path / f"{name}.lrac"), str(tmp_path / "o.wav"), "--model", model])
        assert code == 2 and out.startswith("error: ") and len(out.strip().splitlines()) == 1, (name, out)
        assert not (tmp_path / "o.wav").exists()
    old = tmp_path / "old.pt"   # weights that do not fit their config (an earlier version's file)
    Codec("t1").save(old)
    state = torch.load(old, weights_only=False)
    state["config"]["model"]["frame"]["pitch"] = None
    state["config"]["model"]["frame"]["lowband"] = None   # it needs the pitch path
    torch.save(state, old)
    code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "o.wav"), "--model", str(old)])
    assert code == 2 and "weights do not fit" in out and len(out.strip().splitlines()) == 1
    other = tmp_path / "other.pt"
    Codec("baseline-t1").save(other)
    code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "o.wav"), "--model", str(other)])
    assert code == 2 and "another model" in out


def test_model_required_and_bad_bitrate(tmp_path, wav, model):
    code, out = run(encode_main, [str(wav), str(tmp_path / "o.lrac")])
    if not Codec.pretrained_names():
        assert code == 2 and "--model" in out
    code, out = run(encode_main, [str(wav), str(tmp_path / "o.lrac"), "--model", model, "--bitrate", "3"])
    assert code == 2 and "3 kbit/s is not a mode of this model: 1, 6 kbit/s" in out and "give" not in out
    # a figure in bit/s (the API's unit) is named as the slip it is
    code, out = run(encode_main, [str(wav), str(tmp_path / "b.lrac"), "--model", model, "--bitrate", "6000"])
    assert code == 2 and "6000 bit/s? give --bitrate 6" in out and not (tmp_path / "b.lrac").exists()


def test_print_config(model):
    code, out = run(encode_main, ["x", "--model", model, "--print-config"])
    assert code == 0 and "family: seanet" in out


def test_console_scripts_installed(tmp_path, wav, model):
    """The installed entry points work as a user types them (subprocess, real exit codes)."""
    out = tmp_path / "x.lrac"
    subprocess.run(["lrac-encode", str(wav), str(out), "--model", model], check=True, capture_output=True)
    bad = subprocess.run(["lrac-decode", str(tmp_path / "missing.lrac"), str(tmp_path / "y.wav"),
                          "--model", model], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def test_shipped_models_work_out_of_the_box(tmp_path, wav):
    """With the package's pretrained files: no --model means t1 (and, for decoding one file, the model
    its header names), --model t2 selects the other, and a file coded by one model is refused by the
    other with the maker's name."""
    if not {"t1", "t2"} <= set(Codec.pretrained_names()):
        pytest.skip("no pretrained t1/t2 in lrac/pretrained")
    t1, t2 = Codec.pretrained("t1"), Codec.pretrained("t2")
    assert t1.model_id != t2.model_id
    assert (t1.config.model.track, t2.config.model.track) == (1, 2)
    from lrac.eval.complexity import complexity_report
    for codec in (t1, t2):  # within its track's compute and latency limits, RVQ included
        report = complexity_report(codec)
        assert all(report["pass"].values()) and all(report["pass_with_rvq"].values())
    out_wav = tmp_path / "o.wav"
    for extra in ([], ["--model", "t2"]):
        lrac_file = tmp_path / f"x{len(extra)}.lrac"
        assert run(encode_main, [str(wav), str(lrac_file), "--bitrate", "6", *extra])[0] == 0
        assert run(decode_main, [str(lrac_file), str(out_wav), *extra])[0] == 0
        decoded, rate = sf.read(out_wav)
        assert rate == 24000 and abs(len(decoded) - 1.3 * 24000) < 2 and np.isfinite(decoded).all()
    code, out = run(decode_main, [str(tmp_path / "x0.lrac"), str(out_wav), "--model", "t2"])
    assert code == 2 and "another model" in out and "pass --model t1" in out   # names the maker
    code, out = run(decode_main, [str(tmp_path / "x2.lrac"), str(out_wav), "--model", "t1"])
    assert code == 2 and "pass --model t2" in out
    # with no --model, one file decodes with the pretrained model its header names: t2's file as t2
    by_header = tmp_path / "h.wav"
    assert run(decode_main, [str(tmp_path / "x2.lrac"), str(by_header)])[0] == 0
    assert np.array_equal(sf.read(by_header)[0], sf.read(out_wav)[0])   # out_wav: x2 with --model t2


def test_model_note_headline():
    """Commands print a pretrained model's note without its bracketed details (kept in Codec.note);
    a note with an unclosed bracket is printed whole rather than cut."""
    from lrac.cli.common import note_headline
    assert note_headline("preview model, version 3 (trained (a while) on a CPU); figures in x.md") == \
        "preview model, version 3; figures in x.md"
    assert note_headline("v2 (GPU): still below the input") == "v2: still below the input"
    assert note_headline("no details") == "no details"
    assert note_headline("odd ( bracket") == "odd ( bracket"


def test_commands_start_without_scipy_signal():
    """The coding commands do not import scipy.signal until they resample: it takes about a second
    to import, which every lrac-encode / lrac-decode call would otherwise pay."""
    import sys
    code = ("import sys, lrac, lrac.cli.encode, lrac.cli.decode; "
            "print('scipy.signal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def _crafted(model_id, n_q, frames, samples, bitrate, rate=24000, payload=None):
    """A .lrac file with these header fields, a zero payload of the size they imply and a
    correct CRC (what someone who read the format can write)."""
    import struct
    import zlib
    head = struct.pack("<4sBB8sIHII", b"LRAC", 1, 10 << 4 | n_q, model_id, rate, bitrate, frames, samples)
    payload = bytes(bitstream.payload_bytes(frames, n_q, 10)) if payload is None else payload
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _one_error_line(out):
    errors = [line for line in out.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    return len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in out


def test_crafted_files_are_refused_in_one_line(tmp_path, model):
    """The crafted files of the issue: no audio, 2^32-1 samples (a 22 MB payload that would decode
    to 54 GB), 3 stages at 3 kbps, a 1 Hz rate, a valid file with 1 GiB of trailing bytes; each a
    BitstreamError (CLI: one line, exit 2), and in a folder the others still decode."""
    model_id = Codec.load(model).model_id
    frames_max = -(-(2**32 - 1) // 240)
    cases = {"empty": _crafted(model_id, 1, 0, 0, 1000),
             "huge": _crafted(model_id, 1, frames_max, 2**32 - 1, 1000, payload=b""),
             "stages": _crafted(model_id, 3, 100, 24000, 3000),
             "rate": _crafted(model_id, 1, 100, 24000, 1000, rate=1)}
    messages = {"empty": "holds no audio", "huge": "more than an .lrac file holds",
                "stages": "3 stages at 3000 bit/s; this model codes 1000, 6000",
                "rate": "header says 1 Hz", "trailing": "has trailing bytes"}
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in cases.items():
        (folder / f"{name}.lrac").write_bytes(data)
    (folder / "good.lrac").write_bytes(_crafted(model_id, 1, 100, 24000, 1000))
    (folder / "trailing.lrac").write_bytes((folder / "good.lrac").read_bytes())
    os.truncate(folder / "trailing.lrac", (folder / "trailing.lrac").stat().st_size + 2**30)
    for name, message in messages.items():
        with pytest.raises(bitstream.BitstreamError, match=message):   # the API
            decode_file(Codec.load(model), folder / f"{name}.lrac", tmp_path / "o.wav")
        code, out = run(decode_main, [str(folder / f"{name}.lrac"), str(tmp_path / "o.wav"), "--model", model])
        assert code == 2 and _one_error_line(out) and message in out, (name, out)
    assert not (tmp_path / "o.wav").exists()
    code, out = run(decode_main, [str(folder), str(tmp_path / "out"), "--model", model])
    assert code == 2 and "error: 5 of 6 files failed" in out and "Traceback" not in out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.wav"]
    assert sf.info(tmp_path / "out" / "good.wav").frames == 24000


@pytest.mark.parametrize("args, message", [
    (["--chunk-ms", "inf"], "--chunk-ms must be a finite number > 0 and <= 30000, got inf"),
    (["--chunk-ms", "nan"], "--chunk-ms must be a finite number > 0 and <= 30000, got nan"),
    (["--chunk-ms", "-5"], "--chunk-ms must be"),
    (["--chunk-ms", "1e9"], "--chunk-ms must be"),
    (["--bitrate", "nan"], "--bitrate must be a finite number > 0, got nan"),
    (["--bitrate", "inf"], "--bitrate must be a finite number > 0, got inf"),
    (["--threads", "0"], "--threads must be a finite number >= 1 and <= 1024, got 0"),
])
def test_numeric_options_are_checked_and_named(tmp_path, wav, model, args, message):
    code, out = run(encode_main, [str(wav), str(tmp_path / "o.lrac"), "--model", model, *args])
    assert code == 2 and _one_error_line(out) and message in out, out
    if args[0] != "--bitrate":
        code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "o.wav"), "--model", model, *args])
        assert code == 2 and message in out, out


@pytest.mark.parametrize("name, message", [
    ("folder", "is a folder"), ("noext", "has no file extension"), ("o.txt", "'.txt' files cannot be written"),
    ("o.mp3", "o.mp3: '.mp3' files cannot be written"), ("ro/o.wav", "cannot write into")])
def test_decode_output_paths_are_checked_before_the_model_loads(tmp_path, wav, model, monkeypatch, name,
                                                                 message):
    run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model])
    (tmp_path / "folder").mkdir()
    (tmp_path / "ro").mkdir(mode=0o555)
    if name.startswith("ro/") and os.access(tmp_path / "ro", os.W_OK):   # root: fail as read-only would
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the output was checked")
    monkeypatch.setattr("lrac.cli.common.load_codec", no_model)
    code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / name), "--model", model])
    assert code == 2 and _one_error_line(out) and message in out, out


def test_an_output_that_would_destroy_the_input_or_is_no_bitstream_name_is_refused(tmp_path, wav, model,
                                                                                   monkeypatch):
    """lrac-encode IN.wav IN.wav (or OUT.wav, OUT.flac: a bitstream under an audio name) and a decode
    onto its own input are refused before the model loads; the input stays as it was."""
    run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model])
    (tmp_path / "x.wav").write_bytes((tmp_path / "x.lrac").read_bytes())   # an .lrac file under a .wav name
    before = wav.read_bytes()

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the output was checked")
    monkeypatch.setattr("lrac.cli.common.load_codec", no_model)
    os.link(wav, tmp_path / "same.bin")                                    # the input under another name
    for source, output, message in ((wav, wav, "'.wav' (name it .lrac"),
                                    (wav, tmp_path / "out.flac", "'.flac' (name it .lrac"),
                                    (tmp_path / "same.bin", tmp_path / "same.bin", "is the input file too")):
        code, out = run(encode_main, [str(source), str(output), "--model", model])
        assert code == 2 and _one_error_line(out) and message in out, out
    code, out = run(decode_main, [str(tmp_path / "x.wav"), str(tmp_path / "x.wav"), "--model", model])
    assert code == 2 and _one_error_line(out) and "is the input file too" in out, out
    assert wav.read_bytes() == before and not (tmp_path / "out.flac").exists()


def test_inputs_are_checked_before_the_model_loads(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the input was checked")
    monkeypatch.setattr("lrac.cli.common.load_codec", no_model)
    code, out = run(encode_main, [str(tmp_path / "missing.wav"), str(tmp_path / "o.lrac")])
    assert code == 2 and "missing.wav: file not found" in out
    (tmp_path / "bad.lrac").write_bytes(b"LRAC" + bytes(40))
    code, out = run(decode_main, [str(tmp_path / "bad.lrac"), str(tmp_path / "o.wav")])
    assert code == 2 and _one_error_line(out) and "bad.lrac" in out


def test_every_command_has_version():
    from lrac.cli.export import main as export_main
    from lrac.cli.score import main as score_main
    from lrac.cli.train import main as train_main
    from lrac.cli.common import package_version
    for main in (encode_main, decode_main, score_main, train_main, export_main):
        code, out = run(main, ["--version"])
        assert code == 0 and out.strip().endswith(f"(lrac) {package_version()}")


def test_threads_option_sets_torch_threads(tmp_path, wav, model):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model])[0] == 0
        assert torch.get_num_threads() == 1   # the default
        assert run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "y.wav"), "--model", model,
                                 "--threads", "3"])[0] == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_odd_inputs_are_reported(tmp_path, model):
    """A float file above full scale: clipped, one warning however many blocks; a WAV cut short of
    its header: a warning, and the samples that are there encoded."""
    loud = speechlike(6.0) * 4
    sf.write(tmp_path / "loud.wav", loud, 24000, subtype="FLOAT")
    code, out = run(encode_main, [str(tmp_path / "loud.wav"), str(tmp_path / "l.lrac"), "--model", model])
    assert code == 0 and out.count("clipped to [-1, 1]") == 1 and out.startswith("warning: ")
    sf.write(tmp_path / "cut.wav", speechlike(1.0), 24000)
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 24000])
    code, out = run(encode_main, [str(tmp_path / "cut.wav"), str(tmp_path / "c.lrac"), "--model", model])
    assert code == 0 and "shorter than its header says (12000 of 24000 frames)" in out
    assert bitstream.loads((tmp_path / "c.lrac").read_bytes())[0].num_samples == 12000


def test_a_failure_part_way_leaves_no_file(tmp_path, model):
    """NaN after the first blocks (the file is read and coded as it goes): no output, no temp file."""
    x = speechlike(5.0)
    x[-100] = np.nan
    sf.write(tmp_path / "late.wav", x, 24000, subtype="FLOAT")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out = run(encode_main, [str(tmp_path / "late.wav"), str(out_dir / "x.lrac"), "--model", model,
                                  "--chunk-ms", "500"])
    assert code == 2 and "NaN or infinite (first at 5.00 s)" in out
    assert list(out_dir.iterdir()) == []


def test_progress_reports_seconds_to_the_end(tmp_path, model):
    from lrac.cli.common import progress_bar
    from lrac.compress import encode_file
    sf.write(tmp_path / "a.wav", speechlike(7.0, 16000), 16000)
    seen = []
    encode_file(Codec.load(model), tmp_path / "a.wav", tmp_path / "a.lrac", 1000,
                progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 1 and seen[-1] == (7.0, 7.0) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    decode_file(Codec.load(model), tmp_path / "a.lrac", tmp_path / "a.wav", progress=lambda d, t: seen.append(d))
    assert seen[-1] == 7.0
    assert progress_bar("encode", enabled=False) is None
    assert progress_bar("encode", enabled=True) is None   # stderr is not a terminal under pytest


def test_simulate_loss_decodes_packets_with_concealment(tmp_path, wav, model):
    """--simulate-loss: the same length as the lossless decode, changed only where packets were lost
    (and the decoder's memory after them), the same losses for the same seed, a summary line."""
    run(encode_main, [str(wav), str(tmp_path / "x.lrac"), "--model", model])
    run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "clean.wav"), "--model", model])
    outs = {}
    for name, extra in [("a", []), ("b", []), ("zero", ["--conceal", "zero"]), ("seed", ["--seed", "5"])]:
        code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / f"{name}.wav"), "--model", model,
                                      "--simulate-loss", "30", "--burst", "2", *extra])
        assert code == 0 and "lost" in out and "of 65 packets" in out
        outs[name] = sf.read(tmp_path / f"{name}.wav", dtype="int16")[0]
    clean = sf.read(tmp_path / "clean.wav", dtype="int16")[0]
    assert all(len(o) == len(clean) for o in outs.values())
    assert np.array_equal(outs["a"], outs["b"])
    assert not np.array_equal(outs["a"], clean) and not np.array_equal(outs["a"], outs["zero"])
    assert not np.array_equal(outs["a"], outs["seed"])
    code, _ = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "n.wav"), "--model", model,
                                "--simulate-loss", "0"])
    n = sf.read(tmp_path / "n.wav", dtype="int16")[0].astype(int)
    assert code == 0 and np.abs(n - clean).max() <= 1


@pytest.mark.parametrize("args, message", [
    (["--burst", "3"], "--burst needs --simulate-loss"),
    (["--simulate-loss", "100"], "--simulate-loss must be a finite number >= 0 and < 100, got 100"),
    (["--simulate-loss", "nan"], "--simulate-loss must be a finite number >= 0 and < 100, got nan"),
    (["--simulate-loss", "-1"], "--simulate-loss must be"),
    (["--simulate-loss", "10", "--burst", "0.5"], "--burst must be a finite number >= 1, got 0.5"),
    (["--simulate-loss", "10", "--burst", "inf"], "--burst must be a finite number >= 1, got inf"),
    (["--simulate-loss", "10", "--seed", "-1"], "--seed must be a finite number >= 0, got -1"),
    (["--simulate-loss", "10", "--packet-ms", "25"], "10, 20, 30 or 40"),
    (["--simulate-loss", "10", "--packet-ms", "nan"], "10, 20, 30 or 40, got nan"),
    (["--simulate-loss", "10", "--chunk-ms", "20"], "do not go together"),
])
def test_simulate_loss_refuses_bad_options(tmp_path, model, args, message):
    """Refused before the input is read (x.lrac does not exist) and the model loads."""
    code, out = run(decode_main, [str(tmp_path / "x.lrac"), str(tmp_path / "y.wav"), "--model", model, *args])
    assert code == 2 and _one_error_line(out) and message in out, out

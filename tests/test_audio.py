"""lrac.audio: block reading with its checks, streaming resampling, output paths and writing."""

import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from lrac.audio import AudioError, AudioReader, AudioWriter, StreamResampler, check_output_path, \
    load_audio, resample


@pytest.mark.parametrize("rate_in, rate_out", [(16000, 24000), (44100, 24000), (24000, 16000),
                                               (22050, 24000), (24000, 8000), (24000, 24000)])
def test_stream_resampler_equals_whole_signal_resampling(rate_in, rate_out):
    """Any block sizes give exactly :func:`resample` of the whole signal, and the input it keeps
    stays a filter span long however long the stream is."""
    rng = np.random.default_rng(rate_in + rate_out)
    for n in (1, 7, 3001, 50000):
        x = rng.standard_normal(n).astype(np.float32)
        stream, parts, pos = StreamResampler(rate_in, rate_out), [], 0
        while pos < n:
            size = int(rng.integers(1, 4000))
            parts.append(stream.push(x[pos:pos + size]))
            pos += size
        parts.append(stream.flush())
        assert np.array_equal(np.concatenate(parts), resample(x, rate_in, rate_out))
    if rate_in != rate_out:
        for _ in range(50):
            stream.push(np.zeros(rate_in))
        assert len(stream.buffer) < 2 * len(stream.taps) / stream.up + rate_in


def _wav(path, audio, rate, subtype="PCM_16"):
    sf.write(path, audio, rate, subtype=subtype)
    return path


def test_reader_blocks_equal_the_whole_file_resampled(tmp_path):
    x = (0.3 * np.random.default_rng(0).standard_normal((70000, 2))).astype(np.float32)
    path = _wav(tmp_path / "s.wav", x, 16000, "FLOAT")
    with pytest.warns(UserWarning, match="2 channels, averaged to mono"):
        with AudioReader(path, 24000, block_samples=5000) as reader:
            assert reader.num_samples == 105000
            blocks = list(reader.blocks())
    assert np.array_equal(np.concatenate(blocks), resample(x.mean(axis=1), 16000, 24000))


def test_reader_refuses_rates_below_8_khz(tmp_path):
    path = _wav(tmp_path / "low.wav", np.zeros(800, dtype=np.float32), 8000)
    data = bytearray(path.read_bytes())
    data[24:28] = (1).to_bytes(4, "little")   # the header now says 1 Hz
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="sample rate 1 Hz is below 8000 Hz"):
        AudioReader(path)
    with pytest.raises(AudioError, match="below 8000 Hz"):
        load_audio(path)


def test_samples_above_full_scale_are_clipped_with_one_warning(tmp_path):
    x = np.full(200000, 0.1, dtype=np.float32)
    x[1000], x[150000] = 3.0, -1e37
    path = _wav(tmp_path / "loud.wav", x, 24000, "FLOAT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audio, _ = load_audio(path)
    assert [str(w.message) for w in caught] == [f"{path}: samples above full scale (up to 3 at 0.04 s); "
                                                "clipped to [-1, 1]"]
    assert audio.max() == 1.0 and audio.min() == -1.0 and audio[5] == np.float32(0.1)


def test_nan_is_refused_with_its_time(tmp_path):
    x = np.zeros(100000, dtype=np.float32)
    x[72000] = np.nan
    path = _wav(tmp_path / "nan.wav", x, 24000, "FLOAT")
    with pytest.raises(AudioError, match=r"1 sample\(s\) are NaN or infinite \(first at 3.00 s\)"):
        load_audio(path)


def test_a_wav_shorter_than_its_header_says_is_reported(tmp_path):
    path = _wav(tmp_path / "cut.wav", np.zeros(48000, dtype=np.float32), 24000)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 48000])   # half the samples
    with pytest.warns(UserWarning, match="shorter than its header says \\(24000 of 48000 frames\\)"):
        audio, _ = load_audio(path)
    assert len(audio) == 24000
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # a whole file: no warning
        load_audio(_wav(tmp_path / "whole.wav", np.zeros(480, dtype=np.float32), 24000))


def test_a_file_cut_in_the_middle_is_an_audio_error(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(96000), 24000)
    path.write_bytes(path.read_bytes()[:30000])
    with pytest.raises(AudioError, match="cut.flac: cannot read audio"):
        load_audio(path)


def test_output_path_checks(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    for name, message in [("folder.wav", "is a folder"), ("noext", "has no file extension"),
                          ("x.txt", "'.txt' files cannot be written"), ("x.mp3", "'.mp3' files cannot")]:
        with pytest.raises(AudioError, match=message) as info:
            check_output_path(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))
    assert check_output_path(tmp_path / "new" / "sub" / "x.flac") == tmp_path / "new" / "sub" / "x.flac"
    assert not (tmp_path / "new").exists()   # checking creates nothing
    (tmp_path / "file").write_text("")
    with pytest.raises(AudioError, match="is not a folder"):
        check_output_path(tmp_path / "file" / "x.wav")


def test_output_in_a_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):   # root writes anywhere: make the probe fail as a read-only place would
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(AudioError, match=f"cannot write into {folder} \\(Permission denied\\)"):
        check_output_path(folder / "x.wav")


def test_writer_leaves_nothing_on_error_and_renames_when_done(tmp_path):
    out = tmp_path / "o.wav"
    with pytest.raises(RuntimeError):
        with AudioWriter(out, 16000) as writer:
            writer.write(np.zeros(100))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with AudioWriter(out, 16000) as writer:
        writer.write(np.full(100, 2.0))
        writer.write(np.zeros(50))
        writer.close()
    audio, rate = sf.read(out, dtype="int16")
    assert rate == 16000 and len(audio) == 150 and audio[0] == 32767
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]

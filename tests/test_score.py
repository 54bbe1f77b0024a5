"""Scoring: pairing, delay compensation, bad inputs, summaries, reports, stages 6-7."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import shared_data, speechlike
from pesq import pesq as reference_pesq
from pystoi import stoi as reference_stoi

from lrac.audio import load_audio
from lrac.eval import score as S

torch.set_num_threads(1)
FAST = ["pesq_wb", "stoi", "si_sdr"]


def _noisy(x: np.ndarray, amplitude: float = 0.003, seed: int = 1) -> np.ndarray:
    return (x + amplitude * np.random.default_rng(seed).standard_normal(len(x))).astype(np.float32)


def _write(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # float wav: no 16-bit rounding in exactness checks (FLAC holds integers only)
    sf.write(path, audio, rate, subtype="PCM_16" if path.suffix == ".flac" else "FLOAT")
    return path


# -- pairing ----------------------------------------------------------------------------------


def test_missing_counterparts_on_either_side_are_listed_as_skipped(tmp_path):
    for utt in ("a", "b", "c"):
        _write(tmp_path / "ref" / f"{utt}.wav", speechlike(0.5, 16000))
    for utt in ("b", "c", "d"):
        _write(tmp_path / "deg" / f"{utt}.wav", speechlike(0.5, 16000))
    pairs, skipped = S.pair_utterances(tmp_path / "ref", tmp_path / "deg")
    assert [p.utt for p in pairs] == ["b", "c"]
    assert {(s.utt, s.reason) for s in skipped} == {("a", "no decoded counterpart"),
                                                    ("d", "no reference counterpart")}


def test_scp_lists_pair_with_a_nested_folder_by_utterance_id(tmp_path):
    ref = _write(tmp_path / "data" / "spk1" / "utt1.flac", speechlike(0.5, 16000))
    _write(tmp_path / "data" / "spk2" / "utt2.flac", speechlike(0.5, 16000))
    (tmp_path / "exp").mkdir()
    _write(tmp_path / "exp" / "wav" / "utt1.wav", speechlike(0.5, 16000))
    (tmp_path / "exp" / "wav.scp").write_text("utt1 wav/utt1.wav\n")  # relative to the list
    pairs, skipped = S.pair_utterances(tmp_path / "data", tmp_path / "exp" / "wav.scp")
    assert [(p.utt, p.ref) for p in pairs] == [("utt1", ref)]
    assert [(s.utt, s.reason) for s in skipped] == [("utt2", "no decoded counterpart")]


def test_repeated_utterance_id_in_an_scp_is_refused(tmp_path):
    scp = tmp_path / "reference.scp"
    scp.write_text("u1 a.wav\nu1 b.wav\n")
    with pytest.raises(ValueError, match="'u1' appears twice"):
        S.load_list(scp)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        S.load_list(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio"):
        S.load_list(tmp_path / "empty")


# -- delay --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lag", [37, -37, 0])
def test_delay_compensation_recovers_a_37_sample_shift(lag):
    ref = speechlike(2.0, 16000)
    deg = np.concatenate([np.zeros(lag, np.float32), ref]) if lag >= 0 else ref[-lag:]
    found, corr = S.estimate_delay(ref, _noisy(deg), 16000, max_delay_ms=100)
    assert found == lag and corr > 0.9
    r, d = S.align(ref, deg, found)
    np.testing.assert_array_equal(r[: len(d)], d[: len(r)])


def _syllables(t: np.ndarray) -> np.ndarray:
    """A syllable-rate envelope (2.3 Hz bursts, slowly varying loudness) over times ``t`` in s."""
    return np.maximum(0, np.sin(2 * np.pi * 2.3 * t)) ** 2 * (1 + np.sin(2 * np.pi * 0.4 * t))


def test_delay_of_a_vocoder_like_output_comes_from_band_envelopes():
    # Same syllable envelope, independent noise carriers: no waveform correlation at all.
    rate, shift = 16000, 240
    t = np.arange(3 * rate) / rate
    env = _syllables(t)
    rng = np.random.default_rng(0)
    ref = (env * rng.standard_normal(len(t))).astype(np.float32)
    deg = np.concatenate([np.zeros(shift), env * rng.standard_normal(len(t))]).astype(np.float32)
    found, corr = S.estimate_delay(ref, deg, rate)
    assert corr < S.MIN_WAVEFORM_CORRELATION
    assert abs(found - shift) <= rate // 1000  # 1 ms envelope hop


def test_a_pitch_period_alias_does_not_pass_for_a_delay():
    # Synthetic phase: the harmonics are half a period (5 ms) off while the envelope is on time, so
    # the waveform correlation peaks at +-5 ms (0.43, "clear") though nothing is delayed.
    rate = 16000
    t = np.arange(3 * rate) / rate
    env = _syllables(t)
    harmonics = lambda shift: sum(np.cos(2 * np.pi * 100 * k * (t - shift)) for k in range(1, 20)) / 5
    rng = np.random.default_rng(0)
    ref = env * (harmonics(0.0) + 0.7 * rng.standard_normal(len(t)))
    deg = env * (harmonics(0.005) + 0.7 * rng.standard_normal(len(t)))
    lags, corr = S._xcorr(ref, deg, rate // 10)
    assert abs(lags[np.argmax(corr)]) == 80                                     # the alias
    found, peak = S.estimate_delay(ref, deg, rate)
    assert S.MIN_WAVEFORM_CORRELATION <= peak < S.STRONG_WAVEFORM_CORRELATION
    assert found == 0


def test_score_pair_compensates_delay_exactly(tmp_path):
    ref = speechlike(3.0, 16000)
    deg = _noisy(ref)
    _write(tmp_path / "ref.wav", ref)
    _write(tmp_path / "aligned.wav", deg)
    _write(tmp_path / "late.wav", np.concatenate([np.zeros(37, np.float32), deg]))
    aligned = S.score_pair(S.Pair("u", tmp_path / "ref.wav", tmp_path / "aligned.wav"), FAST)
    late = S.score_pair(S.Pair("u", tmp_path / "ref.wav", tmp_path / "late.wav"), FAST)
    assert late["delay_ms"] == pytest.approx(37 / 16)
    assert aligned["delay_ms"] == 0.0
    for col in FAST:
        assert late[col] == pytest.approx(aligned[col], abs=1e-9)
    assert late["notes"] == ""


def test_scores_equal_pesq_and_pystoi_on_the_same_real_files(tmp_path):
    root = shared_data()
    if root is None:
        pytest.skip("shared data folder not found (set LRAC_DATA or place it at ../shared/data)")
    rel = next(p for p in (root / "splits" / "test.speech.txt").read_text().split() if "librispeech" in p)
    ref, rate = load_audio(root / rel)
    sf.write(tmp_path / "deg.wav", _noisy(ref, 0.01), rate, subtype="PCM_16")
    row = S.score_pair(S.Pair("u", root / rel, tmp_path / "deg.wav"), ["pesq_wb", "stoi", "estoi"])
    r, _ = sf.read(root / rel)
    d, _ = sf.read(tmp_path / "deg.wav")
    assert row["delay_ms"] == 0.0
    assert row["pesq_wb"] == pytest.approx(reference_pesq(rate, r, d, "wb"), abs=1e-4)
    assert row["stoi"] == pytest.approx(reference_stoi(r, d, rate), abs=1e-6)
    assert row["estoi"] == pytest.approx(reference_stoi(r, d, rate, extended=True), abs=1e-6)


# -- bad inputs -----------------------------------------------------------------------------------


def test_different_rate_and_length_are_scored_with_a_note(tmp_path):
    ref = speechlike(3.0, 24000)
    _write(tmp_path / "ref.wav", ref, 24000)
    _write(tmp_path / "rate.wav", speechlike(3.0, 16000), 16000)
    _write(tmp_path / "short.wav", _noisy(ref[: 2 * 24000]), 24000)
    rate = S.score_pair(S.Pair("r", tmp_path / "ref.wav", tmp_path / "rate.wav"), FAST)
    short = S.score_pair(S.Pair("s", tmp_path / "ref.wav", tmp_path / "short.wav"), FAST)
    assert rate["status"] == "ok" and "resampled to the reference's 24000 Hz" in rate["notes"]
    assert rate["pesq_wb"] > 3.5
    assert short["status"] == "ok" and "1.00 s shorter" in short["notes"]
    assert short["duration_s"] == pytest.approx(2.0)


def test_silence_gives_nan_with_the_reason_and_the_run_goes_on(tmp_path):
    _write(tmp_path / "ref" / "u.wav", speechlike(2.0))
    _write(tmp_path / "deg" / "u.wav", np.zeros(32000, np.float32))
    result = S.score(tmp_path / "ref", tmp_path / "deg", FAST)
    (row,) = result.rows
    assert row["status"] == "ok" and math.isnan(row["pesq_wb"])
    assert "pesq_wb: decoded audio is silent (PESQ refuses silence)" in row["notes"]
    assert result.summary["pesq_wb"]["n"] == 0 and result.summary["pesq_wb"]["nan"] == 1


def test_corrupt_files_are_skipped_with_the_reason(tmp_path):
    for utt in ("good", "bad_deg", "bad_ref"):
        _write(tmp_path / "ref" / f"{utt}.wav", speechlike(1.0))
        _write(tmp_path / "deg" / f"{utt}.wav", _noisy(speechlike(1.0)))
    (tmp_path / "deg" / "bad_deg.wav").write_bytes(b"RIFF not really a wav")
    (tmp_path / "ref" / "bad_ref.wav").write_bytes(b"")
    _write(tmp_path / "ref" / "tiny.wav", speechlike(1.0))
    _write(tmp_path / "deg" / "tiny.wav", speechlike(1.0)[:5])  # 5 samples survive a crash
    result = S.score(tmp_path / "ref", tmp_path / "deg", FAST)
    reasons = {r["utt"]: r["reason"] for r in result.skipped}
    assert [r["utt"] for r in result.scored] == ["good", "tiny"]
    tiny = result.scored[1]
    assert math.isnan(tiny["pesq_wb"]) and "pesq_wb" in tiny["notes"] and "shorter" in tiny["notes"]
    assert reasons["bad_deg"].startswith("bad decoded audio:") and "bad_deg.wav" in reasons["bad_deg"]
    assert reasons["bad_ref"].startswith("bad reference:")


# -- summary, reports, parallel -----------------------------------------------------------------------


def test_mean_and_95_percent_interval():
    stats = S.mean_ci95([1.0, 2.0, 3.0, math.nan])
    assert stats["mean"] == 2.0 and stats["n"] == 3 and stats["nan"] == 1
    assert stats["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) * s / sqrt(n)
    assert S.mean_ci95([5.0])["ci95"] is None


def test_reports_and_parallel_jobs(tmp_path):
    for i, utt in enumerate(("a", "b", "c")):
        x = speechlike(1.5, seed=i)
        _write(tmp_path / "ref" / f"{utt}.wav", x)
        _write(tmp_path / "deg" / f"{utt}.wav", _noisy(x, 0.002 * (i + 1)))
    _write(tmp_path / "ref" / "orphan.wav", speechlike(1.0))
    serial = S.score(tmp_path / "ref", tmp_path / "deg", FAST, jobs=1)
    parallel = S.score(tmp_path / "ref", tmp_path / "deg", FAST, jobs=2)
    assert [r["utt"] for r in parallel.rows] == [r["utt"] for r in serial.rows]
    for a, b in zip(serial.scored, parallel.scored):
        assert a["pesq_wb"] == b["pesq_wb"] and a["stoi"] == b["stoi"]

    paths = S.write_report(tmp_path / "out", serial, "test")
    summary = json.loads(paths["summary.json"].read_text())
    assert set(FAST) <= set(summary)
    assert summary["pesq_wb"]["mean"] == pytest.approx(np.mean([r["pesq_wb"] for r in serial.scored]))
    assert summary["pesq_wb"]["ci95"] > 0
    with open(paths["per_utterance.csv"]) as fh:
        rows = {r["utt"]: r for r in csv.DictReader(fh)}
    assert rows["orphan"]["status"] == "skipped" and rows["orphan"]["reason"] == "no decoded counterpart"
    assert float(rows["a"]["pesq_wb"]) == pytest.approx(serial.rows[0]["pesq_wb"], rel=1e-5)
    md = paths["summary.md"].read_text()
    assert "| pesq_wb |" in md and "| orphan | no decoded counterpart |" in md


def test_nan_summary_is_strict_json(tmp_path):
    result = S.ScoreResult([S.Skipped("u", "no decoded counterpart").row()], ["pesq_wb"])
    result.summary = S.summarize(result.rows, result.columns)
    paths = S.write_report(tmp_path, result)
    assert json.loads(paths["summary.json"].read_text())["pesq_wb"] == \
        {"mean": None, "ci95": None, "n": 0, "nan": 0}


# -- stages 6-7 ----------------------------------------------------------------------------------


def test_code_and_score_writes_the_recipe_layout_and_real_bitrate(tmp_path):
    from lrac import Codec

    codec = Codec("baseline-t1")  # untrained: checks the plumbing, not the quality
    testset = tmp_path / "open_testset"
    for i in range(2):
        _write(testset / f"utt{i}.wav", speechlike(1.0, 24000, seed=i), 24000)
    (testset / "broken.wav").write_bytes(b"junk")
    runs = S.code_and_score(codec, testset, tmp_path / "exp", [1, 6], ["stoi", "si_sdr"])
    assert list(runs) == ["1kbps", "6kbps"]
    for label, bps in (("1kbps", 1000), ("6kbps", 6000)):
        base = tmp_path / "exp" / label / "open_testset"
        assert sorted(p.name for p in (base / "lrac").iterdir()) == ["utt0.lrac", "utt1.lrac"]
        scp = dict(line.split() for line in (base / "wav" / "wav.scp").read_text().splitlines())
        assert sorted(scp) == ["utt0", "utt1"] and Path(scp["utt0"]).is_file()
        run = runs[label]
        # 32-byte header per file on top of the payload: 2 s of audio at bps
        assert run["bitrate_bps_real"] == pytest.approx(bps + 2 * 32 * 8 / 2.0, rel=0.02)
        assert run["encode_rtf"] > 0 and run["decode_rtf"] > 0
        result = run["result"]
        assert len(result.scored) == 2
        assert [r["reason"] for r in result.skipped] == [result.skipped[0]["reason"]]
        assert result.skipped[0]["utt"] == "broken" and "not coded" in result.skipped[0]["reason"]
        assert json.loads((base / "score" / "summary.json").read_text())["stoi"]["n"] == 2
    combined = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert combined["6kbps"]["metrics"]["si_sdr"]["n"] == 2
    with pytest.raises(ValueError, match="not a mode of this model: 1, 6 kbit/s"):
        S.code_and_score(codec, testset, tmp_path / "exp2", [3])

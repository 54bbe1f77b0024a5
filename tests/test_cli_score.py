"""``lrac-score`` end to end: reports, bad input as one stderr line + exit 2, model mode, complexity."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner
from conftest import speechlike

from lrac.cli.score import main

torch.set_num_threads(1)
FAST = "pesq_wb,stoi,si_sdr"


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_user_error(result, text: str) -> None:
    """Exit code 2 and exactly one 'error:' line naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


@pytest.fixture
def folders(tmp_path):
    ref, deg = tmp_path / "ref", tmp_path / "deg"
    ref.mkdir(), deg.mkdir()
    for i in range(2):
        x = speechlike(1.5, 16000, seed=i)
        sf.write(ref / f"u{i}.wav", x, 16000)
        shifted = np.concatenate([np.zeros(37, np.float32), x + 0.003 * np.random.default_rng(i).standard_normal(len(x))])
        sf.write(deg / f"u{i}.wav", shifted.astype(np.float32), 16000)
    sf.write(ref / "lonely.wav", speechlike(1.0, 16000), 16000)
    return ref, deg


def test_ref_deg_writes_the_three_reports(folders, tmp_path):
    ref, deg = folders
    result = _run(ref, deg, "--out", tmp_path / "out", "--metrics", FAST)
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"pesq_wb", "stoi", "si_sdr"} <= set(summary)
    assert set(summary["pesq_wb"]) >= {"mean", "ci95"} and summary["pesq_wb"]["n"] == 2
    assert summary["delay_ms"]["mean"] == pytest.approx(37 / 16)
    csv_text = (tmp_path / "out" / "per_utterance.csv").read_text()
    assert "lonely,skipped,no decoded counterpart" in csv_text
    assert "a constant 2.312 ms" in result.stdout  # the markdown summary is printed too


def test_scp_inputs_without_out_print_the_summary(folders, tmp_path):
    ref, deg = folders
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"u{i} {deg / f'u{i}.wav'}\n" for i in range(2)))
    result = _run(ref, scp, "--metrics", "si_sdr")
    assert result.exit_code == 0, result.stderr
    assert "2 utterance(s) scored, 1 skipped" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="--plots needs matplotlib")
def test_plots_write_a_png_per_utterance_and_a_summary(folders, tmp_path):
    ref, deg = folders
    result = _run(ref, deg, "--out", tmp_path / "out", "--metrics", "si_sdr", "--plots")
    assert result.exit_code == 0, result.stderr
    pngs = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert pngs == ["summary.png", "u0.png", "u1.png"]
    assert (tmp_path / "out" / "plots" / "u0.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line_and_exit_2(folders, tmp_path):
    ref, deg = folders
    _assert_user_error(_run(ref), "give REF and DEG")
    _assert_user_error(_run(tmp_path / "missing", deg), "not found")
    _assert_user_error(_run(ref, deg, "--metrics", "polqa"), "unknown metric")
    _assert_user_error(_run(ref, deg, "--set", "score.nope=1"), "unknown config key")
    _assert_user_error(_run("--model", tmp_path / "none.pt", "--testset", ref, "--out", tmp_path / "o"),
                       "file not found")
    for path in deg.iterdir():
        path.write_bytes(b"corrupt")
    result = _run(ref, deg, "--out", tmp_path / "out", "--metrics", FAST)
    _assert_user_error(result, "no utterance could be scored")
    assert "bad decoded audio" in (tmp_path / "out" / "summary.md").read_text()


def test_print_config_shows_the_effective_score_settings():
    result = _run("--print-config", "--jobs", "3", "--bitrate", "1", "6", "--max-delay-ms", "250")
    assert result.exit_code == 0, result.stderr
    score = yaml.safe_load(result.stdout)["score"]
    assert score == {"bitrates_kbps": [1, 6], "max_delay_ms": 250.0}
    single = yaml.safe_load(_run("--print-config", "--bitrate=6").stdout)["score"]
    assert single["bitrates_kbps"] == [6]


def test_model_testset_codes_and_scores_each_bitrate(tmp_path):
    from lrac import Codec

    model = tmp_path / "model.pt"
    Codec("baseline-t1").save(model)  # untrained: plumbing only
    testset = tmp_path / "clean"
    testset.mkdir()
    sf.write(testset / "a.wav", speechlike(1.0, 24000), 24000)
    result = _run("--model", model, "--testset", testset, "--bitrate", "1", "6", "--out", tmp_path / "exp",
                  "--metrics", "si_sdr")
    assert result.exit_code == 0, result.stderr
    for label in ("1kbps", "6kbps"):
        base = tmp_path / "exp" / label / "clean"
        assert (base / "lrac" / "a.lrac").is_file() and (base / "wav" / "a.wav").is_file()
        assert (base / "wav" / "wav.scp").read_text().startswith("a ")
        assert (base / "score" / "per_utterance.csv").is_file()
    combined = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert combined["1kbps"]["bitrate_bps_real"] == pytest.approx(1000 + 32 * 8, rel=0.02)
    assert "| 6kbps |" in result.stdout


def test_complexity_prints_a_table_or_json():
    table = _run("--complexity", "--config", "baseline-t1")
    assert table.exit_code == 0, table.stderr
    assert "MFLOPS" in table.stdout
    report = json.loads(_run("--complexity", "--json").stdout)
    assert report["encoder_mflops"] > 0 and "latency_ms" in report


def test_bad_quantizer_settings_are_one_line_errors():
    _assert_user_error(_run("--complexity", "--config", "t1", "--set", "quantizer.kind=pq"),
                       "quantizer.kind must be 'vq' or 'fsq'")
    _assert_user_error(_run("--complexity", "--config", "t1", "--set", "quantizer.fsq_levels=[4, 4]"),
                       "give 16 codes")


def test_two_explicit_files_are_one_pair(tmp_path):
    x = speechlike(1.5, 16000)
    sf.write(tmp_path / "ref.flac", x, 16000)
    sf.write(tmp_path / "decoded.wav", x, 16000)
    result = _run(tmp_path / "ref.flac", tmp_path / "decoded.wav", "--metrics", "si_sdr")
    assert result.exit_code == 0, result.stderr
    assert "1 utterance(s) scored, 0 skipped" in result.stdout and "| si_sdr |" in result.stdout


def test_complexity_says_which_model_it_describes():
    from lrac import Codec
    default = _run("--complexity")
    assert default.exit_code == 0, default.stderr
    if "t1" in Codec.pretrained_names():   # what lrac-encode uses without --model
        assert default.stdout.startswith("complexity of pretrained model t1\n")
    preset = json.loads(_run("--complexity", "--config", "baseline-t2", "--json").stdout)
    assert preset["described"].startswith("config baseline-t2 (untrained weights")


def test_numeric_options_are_checked_and_named(folders):
    ref, deg = folders
    _assert_user_error(_run(ref, deg, "--max-delay-ms", "nan"), "--max-delay-ms must be a finite number >= 0")
    _assert_user_error(_run(ref, deg, "--jobs", "0"), "--jobs must be a finite number >= 1")

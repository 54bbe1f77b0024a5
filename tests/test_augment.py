"""Augmentation (spec §3.4): achieved SNR, the early-reflection target, clipping, probabilities, rooms."""

import builtins

import numpy as np
import pytest
import soundfile as sf

from lrac.audio import active_power, db
from lrac.config import DataConfig
from lrac.train.augment import (Augmenter, early_rir, fit_noise, reverberate, simulate_rir,
                                synthetic_rir)

SR = 24000


def _speech(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: harmonic bursts separated by silences (so active power matters)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = (np.sin(2 * np.pi * 2.0 * t) > 0).astype(np.float64)
    sig = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate([150, 300, 450], 1))
    return (0.2 * env * sig).astype(np.float32)


def _rir(seed: int = 0, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rir = rng.standard_normal(n) * np.exp(-np.arange(n) / 1500) * 0.2
    rir[:200] = 0
    rir[200] = 1.0  # direct path at 200 samples
    return rir.astype(np.float32)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(5)
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.1 * rng.standard_normal(SR * 5)).astype(np.float32), 16000)  # other rate
    short = tmp_path / "short_noise.flac"
    sf.write(short, (0.1 * rng.standard_normal(2000)).astype(np.float32), SR)
    rir = tmp_path / "rir.wav"
    sf.write(rir, _rir(), SR, subtype="FLOAT")
    return {"noise": [str(noise), str(short)], "rir": [str(rir)]}


def test_early_reflection_target_is_truncated_rir_convolution():
    speech, rir = _speech(), _rir()
    reverberant, early = reverberate(speech, rir, SR, early_ms=50.0)
    cut = rir[: 200 + int(0.05 * SR)]
    assert len(early_rir(rir, SR, 50.0)) == len(cut)
    expected = np.convolve(speech, cut)[: len(speech)]
    expected *= np.sqrt(active_power(speech, SR) / active_power(expected, SR))
    np.testing.assert_allclose(early, expected, atol=1e-5)
    full = np.convolve(speech, rir)[: len(speech)]
    full *= np.sqrt(active_power(speech, SR) / active_power(full, SR))
    np.testing.assert_allclose(reverberant, full, atol=1e-5)
    assert len(reverberant) == len(speech)
    # both are power-matched to the dry speech
    assert db(active_power(reverberant, SR)) == pytest.approx(db(active_power(speech, SR)), abs=0.01)


def test_achieved_snr_matches_drawn(files):
    cfg = DataConfig(reverb_prob=0.0, noise_prob=1.0, snr_db=[-5.0, 30.0])
    aug = Augmenter(cfg, noise_paths=files["noise"][:1])
    speech = _speech()
    drawn = []
    for seed in range(12):
        out = aug(speech, np.random.default_rng(seed))
        assert out.snr_db is not None and out.rir is None
        noise = out.input - out.target
        achieved = db(active_power(out.target, SR)) - db(float(np.mean(noise.astype(np.float64) ** 2)))
        assert abs(achieved - out.snr_db) < 0.5
        np.testing.assert_allclose(out.target, speech * out.clip_scale, atol=1e-6)  # dry target
        drawn.append(out.snr_db)
    assert min(drawn) >= -5 and max(drawn) <= 30 and np.ptp(drawn) > 10


def test_clipping_scales_input_and_target_together(files):
    cfg = DataConfig(reverb_prob=0.0, noise_prob=1.0, snr_db=[-5.0, -5.0])
    speech = _speech() * 4.5  # peaks near 1 already; -5 dB noise pushes the mix over
    out = Augmenter(cfg, noise_paths=files["noise"][:1])(speech, np.random.default_rng(0))
    assert out.clip_scale < 1.0
    assert np.max(np.abs(out.input)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out.target, speech * out.clip_scale, atol=1e-6)


def test_reverb_target_is_early_reflections(files):
    cfg = DataConfig(reverb_prob=1.0, noise_prob=0.0)
    speech = _speech()
    out = Augmenter(cfg, rir_paths=files["rir"])(speech, np.random.default_rng(0))
    reverberant, early = reverberate(speech, _rir(), SR)
    np.testing.assert_allclose(out.input, reverberant, atol=1e-4)
    np.testing.assert_allclose(out.target, early, atol=1e-4)


def test_probabilities(files):
    cfg = DataConfig()  # 0.5 reverb, 0.8 noise
    aug = Augmenter(cfg, noise_paths=files["noise"], rir_paths=files["rir"])
    speech = _speech(1.0)
    outs = [aug(speech, np.random.default_rng(s)) for s in range(200)]
    assert 0.4 < np.mean([o.rir is not None for o in outs]) < 0.6
    assert 0.7 < np.mean([o.snr_db is not None for o in outs]) < 0.9


def test_short_noise_wraps_and_bad_files_are_skipped(files, tmp_path):
    noise = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fit_noise(noise, 12, np.random.default_rng(0)),
                                  [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    cfg = DataConfig(reverb_prob=0.0, noise_prob=1.0)
    aug = Augmenter(cfg, noise_paths=[str(bad), files["noise"][1]])
    with pytest.warns(UserWarning, match="skipping augmentation file"):
        outs = [aug(_speech(1.0), np.random.default_rng(s)) for s in range(6)]
    assert str(bad) in aug.failed
    assert all(o.snr_db is not None for o in outs)  # the readable noise was used instead


def test_simulated_rooms_are_seeded():
    pytest.importorskip("pyroomacoustics")
    a = simulate_rir(np.random.default_rng(3), SR, [3.0, 6.0], [0.2, 0.4])
    b = simulate_rir(np.random.default_rng(3), SR, [3.0, 6.0], [0.2, 0.4])
    np.testing.assert_array_equal(a, b)
    assert len(a) > 0.1 * SR and np.isfinite(a).all()
    cfg = DataConfig(reverb_prob=1.0, noise_prob=0.0, room_size_m=[3.0, 6.0], rt60_s=[0.2, 0.4])
    out = Augmenter(cfg)(_speech(1.0), np.random.default_rng(0))
    assert out.rir is not None and not np.allclose(out.input, out.target)


def test_missing_pyroomacoustics_falls_back_with_message(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pyroomacoustics":
            raise ImportError("no pyroomacoustics")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    cfg = DataConfig(reverb_prob=1.0, noise_prob=0.0)
    with pytest.warns(UserWarning, match="pyroomacoustics is not installed"):
        aug = Augmenter(cfg)
    out = aug(_speech(1.0), np.random.default_rng(0))
    assert out.rir is not None
    rir = synthetic_rir(np.random.default_rng(0), SR, [0.3, 0.3])
    assert len(rir) == int(0.3 * SR) and rir[0] == 1.0

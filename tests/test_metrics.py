"""Metric functions: equal to the reference packages, right units, NaN with a reason when undefined."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from conftest import speechlike
from pesq import pesq as reference_pesq
from pystoi import stoi as reference_stoi

from lrac.audio import load_audio, resample
from lrac.eval import metrics as M

torch.set_num_threads(1)


def _noisy(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


@pytest.fixture(scope="module")
def real_16k() -> tuple[np.ndarray, int]:
    """A real 16 kHz LibriSpeech utterance from the test split (first 6 s)."""
    from conftest import shared_data

    root = shared_data()
    if root is None:
        pytest.skip("shared data folder not found (set LRAC_DATA or place it at ../shared/data)")
    paths = [p for p in (root / "splits" / "test.speech.txt").read_text().split() if "librispeech" in p]
    audio, rate = load_audio(root / paths[0])
    assert rate == 16000
    return audio[: 6 * rate], rate


def test_pesq_and_stoi_equal_the_reference_packages_on_real_speech(real_16k):
    ref, rate = real_16k
    deg = _noisy(ref, 15.0)
    assert M.pesq_wb(ref, deg, rate) == pytest.approx(reference_pesq(rate, ref, deg, "wb"), abs=1e-6)
    nb_ref, nb_deg = resample(ref, rate, 8000), resample(deg, rate, 8000)
    assert M.pesq_nb(ref, deg, rate) == pytest.approx(reference_pesq(8000, nb_ref, nb_deg, "nb"), abs=1e-6)
    assert M.pesq_nb(ref, deg, rate) != pytest.approx(M.pesq_wb(ref, deg, rate), abs=1e-3)
    assert M.stoi(ref, deg, rate) == pytest.approx(reference_stoi(ref, deg, rate), abs=1e-9)
    assert M.estoi(ref, deg, rate) == pytest.approx(reference_stoi(ref, deg, rate, extended=True), abs=1e-9)


def test_pesq_at_24k_resamples_to_16k():
    ref = speechlike(3.0, 24000)
    deg = _noisy(ref, 20.0)
    expected = reference_pesq(16000, resample(ref, 24000, 16000), resample(deg, 24000, 16000), "wb")
    assert M.pesq_wb(ref, deg, 24000) == pytest.approx(expected, abs=1e-6)


def test_perfect_copy_gives_each_metric_its_ceiling():
    ref = speechlike(3.0, 24000)
    values, reasons = M.compute_metrics(ref, ref.copy(), 24000, M.resolve_metrics(
        ["pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance", "lsd"]))
    assert reasons == {}
    assert values["pesq_wb"] > 4.5
    assert values["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert values["si_sdr"] == 100.0  # capped, not ~300 dB of float rounding
    assert values["mel_distance"] == 0.0 and values["lsd"] == 0.0


def test_si_sdr_is_scale_invariant_and_matches_a_known_snr():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(24000)
    noise = rng.standard_normal(24000)
    noise -= ref * np.dot(noise, ref) / np.dot(ref, ref)  # orthogonal: SI-SDR is exactly the SNR
    noise *= np.sqrt(np.sum(ref ** 2) / np.sum(noise ** 2)) / 10 ** (10 / 20)
    ref, noise = ref - ref.mean(), noise - noise.mean()
    assert M.si_sdr(ref, ref + noise) == pytest.approx(10.0, abs=0.05)
    assert M.si_sdr(ref, 0.3 * (ref + noise)) == pytest.approx(M.si_sdr(ref, ref + noise), abs=1e-9)


def test_spectral_distances_grow_with_distortion():
    ref = speechlike(2.0, 24000)
    mild, strong = _noisy(ref, 30.0), _noisy(ref, 5.0)
    assert 0 < M.mel_distance(ref, mild, 24000) < M.mel_distance(ref, strong, 24000)
    assert 0 < M.log_spectral_distance(ref, mild, 24000) < M.log_spectral_distance(ref, strong, 24000)
    # mel distance is defined at 24 kHz whatever the input rate: a 16 kHz copy still scores 0
    ref16 = resample(ref, 24000, 16000)
    assert M.mel_distance(ref16, ref16.copy(), 16000) == 0.0


def test_silent_decoded_audio_gives_nan_with_the_reason_for_pesq():
    ref = speechlike(2.0, 16000)
    with pytest.raises(M.MetricError, match="silent"):
        M.pesq_wb(ref, np.zeros_like(ref), 16000)
    values, reasons = M.compute_metrics(ref, np.zeros_like(ref), 16000,
                                        M.resolve_metrics(["pesq_wb", "pesq_nb", "stoi", "si_sdr"]))
    assert math.isnan(values["pesq_wb"]) and "PESQ refuses silence" in reasons["pesq_wb"]
    assert math.isnan(values["pesq_nb"]) and "silent" in reasons["pesq_nb"]
    assert math.isnan(values["si_sdr"]) and "zeros" in reasons["si_sdr"]
    assert values["stoi"] == pytest.approx(0.0, abs=1e-3)  # defined: nothing intelligible


def test_silent_reference_makes_every_intrusive_metric_nan():
    deg = speechlike(2.0, 16000)
    names = ["pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance", "lsd"]
    values, reasons = M.compute_metrics(np.zeros_like(deg), deg, 16000, M.resolve_metrics(names))
    assert all(math.isnan(values[n]) for n in names)
    assert set(reasons.values()) == {"reference is silent"}


def test_unaligned_lengths_are_refused():
    ref = speechlike(1.0, 16000)
    with pytest.raises(M.MetricError, match="lengths differ"):
        M.stoi(ref, ref[:-10], 16000)


def test_unknown_metric_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: pesq_wb"):
        M.resolve_metrics(["pesq_wb", "polqa"])


def test_a_failing_metric_does_not_lose_the_others():
    ref = speechlike(0.1, 16000)  # too short for PESQ and STOI
    values, reasons = M.compute_metrics(ref, ref.copy(), 16000, M.resolve_metrics(["pesq_wb", "si_sdr"]))
    assert math.isnan(values["pesq_wb"]) and reasons["pesq_wb"]
    assert values["si_sdr"] == 100.0


@pytest.mark.skipif(importlib.util.find_spec("speechmos") is None,
                    reason="DNSMOS needs speechmos (pip install 'lrac[mos]')")
def test_dnsmos_runs_offline_and_hears_noise():
    ref = speechlike(3.0, 16000)
    clean = M.dnsmos(ref, 16000)
    noisy = M.dnsmos(_noisy(ref, 0.0), 16000)
    assert set(clean) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    assert noisy["dnsmos_bak"] < clean["dnsmos_bak"]


@pytest.mark.skipif(importlib.util.find_spec("speechmos") is None,
                    reason="PLCMOS needs speechmos (pip install 'lrac[mos]')")
def test_plcmos_is_repeatable_and_hears_dropouts():
    """PLCMOS averages random "raters": drawn with a fixed seed, the same audio scores the same,
    and numpy's global generator is left as it was. 20 ms holes every 100 ms score lower."""
    ref = speechlike(4.0, 16000)
    holes = ref.copy()
    for start in range(800, len(holes), 1600):
        holes[start:start + 320] = 0
    np.random.seed(3)
    first = M.plcmos(ref, 16000)
    after = np.random.random()
    np.random.seed(3)
    assert M.plcmos(ref, 16000) == first and np.random.random() == after
    assert 1.0 <= first <= 5.0
    assert M.plcmos(holes, 16000) < first - 0.3

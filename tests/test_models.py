"""Exact compute counts, parameters, latency and shapes of the baseline models (spec §2)."""

import pytest
import torch

import lrac
from lrac.eval.complexity import complexity_report

# Spec §2.2/2.3 [derived]: encoder / decoder MFLOPS, latency ms, encoder/decoder params (approx).
SPEC = {"baseline-t1": (377.5, 296.8, 30.0, 256_000, 161_000),
        "baseline-t2": (1944.2, 594.0, 50.0, 1_150_000, 360_000)}


@pytest.mark.parametrize("preset", sorted(SPEC))
def test_compute_and_latency_match_spec(preset):
    enc_mf, dec_mf, latency, enc_p, dec_p = SPEC[preset]
    r = complexity_report(lrac.Codec(preset))
    assert r["encoder_mflops"] == pytest.approx(enc_mf, rel=0.01)
    assert r["decoder_mflops"] == pytest.approx(dec_mf, rel=0.01)
    assert r["latency_ms"] == pytest.approx(latency, abs=1e-6)
    assert r["buffering_ms"] == pytest.approx(10.0)
    assert r["encoder_params"] == pytest.approx(enc_p, rel=0.01)
    assert r["decoder_params"] == pytest.approx(dec_p, rel=0.01)
    assert all(r["pass"].values())


def test_track1_exact_mac_count():
    # 188.736 M MAC/s for the T1 encoder, 148.416 M MAC/s for the decoder (hand count, spec §7.6).
    r = complexity_report(lrac.Codec("baseline-t1"))
    assert r["encoder_mflops"] == pytest.approx(2 * 188.736, abs=1e-6)
    assert r["decoder_mflops"] == pytest.approx(2 * 148.416, abs=1e-6)
    assert r["quantizer_encode_mflops"] == pytest.approx(19.3536, abs=1e-4)


def test_moving_lookahead_changes_latency():
    cfg = lrac.load_config("baseline-t1", {"model.decoder.lookahead": []})
    r = complexity_report(lrac.Codec(cfg))
    assert r["decoder_lookahead_ms"] == 0 and r["latency_ms"] == pytest.approx(20.0)


@pytest.mark.parametrize("preset", ["baseline-t1", "baseline-t2"])
def test_shapes_and_range(preset):
    codec = lrac.Codec(preset)
    wav = torch.randn(2, 1, 4800)
    latent = codec.encoder(wav)
    assert latent.shape == (2, codec.config.model.latent_dim, 20)
    out = codec.decoder(latent)
    assert out.shape == (2, 1, 4800) and out.abs().max() <= 1


def test_causality_of_causal_config():
    """With every look-ahead removed, output at time t must not depend on input after t."""
    cfg = lrac.load_config("baseline-t1", {"model.encoder.lookahead": [], "model.decoder.lookahead": []})
    codec = lrac.Codec(cfg)
    x = torch.randn(1, 1, 4800)
    y = codec.decoder(codec.encoder(x))
    x2 = x.clone()
    x2[..., 2400:] = torch.randn(1, 1, 2400)
    y2 = codec.decoder(codec.encoder(x2))
    assert torch.equal(y[..., :2400], y2[..., :2400])
    assert not torch.equal(y[..., 2400:], y2[..., 2400:])


def test_lookahead_is_bounded_by_reported_latency():
    """Changing input after t changes output only from t - lookahead on (in whole frames)."""
    codec = lrac.Codec("baseline-t1")
    x = torch.randn(1, 1, 9600)
    y = codec.decoder(codec.encoder(x))
    x2 = x.clone()
    x2[..., 4800:] = 0
    y2 = codec.decoder(codec.encoder(x2))
    # 20 ms of look-ahead (10 encoder + 10 decoder) = 480 samples; frames add up to 240 more.
    assert torch.equal(y[..., : 4800 - 480 - 240], y2[..., : 4800 - 480 - 240])
    assert not torch.equal(y[..., :4800], y2[..., :4800])

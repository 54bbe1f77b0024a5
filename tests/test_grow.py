"""Growing a trained frame-family model: more blocks, look-ahead and hidden units, same function."""

import pytest
import torch

from lrac.codec import Codec
from lrac.config import load_config
from lrac.eval.complexity import complexity_report
from lrac.train.grow import grow_generator, growth_plan
from conftest import speechlike

GROWN = ["model.frame.encoder_layers=4", "model.frame.encoder_lookahead_frames=2",
         "model.frame.encoder_mlp_ratio=3", "model.frame.decoder_layers=4",
         "model.frame.decoder_lookahead_frames=2"]


def _small(extra=()):
    return load_config("t1", ["model.frame.encoder_dim=64", "model.frame.encoder_layers=2",
                                   "model.frame.decoder_dim=64", "model.frame.decoder_layers=2", *extra])


def _trained_like(cfg):
    """A codec whose weights are all non-trivial (as after training): gammas included."""
    torch.manual_seed(0)
    codec = Codec(cfg)
    with torch.no_grad():
        for name, p in codec.generator.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.6)
    return codec


def test_a_grown_model_codes_as_its_source():
    src_cfg = _small()
    src = _trained_like(src_cfg)
    dst_cfg = src_cfg.override(GROWN)
    dst = Codec(dst_cfg)
    report = grow_generator(dst.generator, src.generator.state_dict(), src_cfg.model, dst_cfg.model)
    assert len(report) == 2 and "2 -> 4 blocks (2 new look-ahead block(s) in front, 0 at the end)" in report[0]
    assert "1 new look-ahead block(s) in front, 1 at the end" in report[1]
    audio = torch.from_numpy(speechlike(2.0, seed=3))
    for codec in (src, dst):
        codec.fold_weight_norm().set_exact(True)
    tokens = src.encode(audio, 6000)
    assert torch.equal(dst.encode(audio, 6000), tokens)
    assert torch.allclose(dst.decode(tokens), src.decode(tokens), atol=1e-5)
    # the grown model streams as it codes in one pass, with its longer look-ahead
    enc = dst.stream_encoder(6000)
    streamed = torch.cat([enc.push(audio[i:i + 1200]) for i in range(0, len(audio), 1200)] + [enc.flush()], -1)
    assert torch.equal(streamed, tokens)
    assert complexity_report(dst)["latency_ms"] == complexity_report(src)["latency_ms"] + 20 + 10


def test_only_growth_is_accepted():
    src = _small().model
    assert growth_plan(src, _small(GROWN).model) == {"encoder": 2, "decoder": 1}
    for change, message in [("model.frame.encoder_dim=96", "encoder_dim differs"),
                            ("model.latent_dim=64", "model.latent_dim differs"),
                            ("model.frame.decoder_layers=1", "can only grow"),
                            ("model.frame.encoder_mlp_ratio=1", "can only grow"),
                            ("model.frame.encoder_lookahead_frames=1", "at most the number of new"),
                            ("model.frame.pitch=null", "model.frame.pitch differs")]:
        with pytest.raises(ValueError, match=message):
            growth_plan(src, _small([change]).model)
    with pytest.raises(ValueError, match="frame-family"):
        growth_plan(load_config("baseline-t1").model, load_config("baseline-t1").model)


def test_weights_that_do_not_match_their_config_are_refused():
    """A file whose weights do not fit the config it carries fails with a reason, not a KeyError."""
    src_cfg = _small()
    state = _trained_like(src_cfg).generator.state_dict()
    dst_cfg = src_cfg.override(GROWN)
    broken = {**state, "decoder.net.backbone.out.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match="do not match the config they came with"):
        grow_generator(Codec(dst_cfg).generator, broken, src_cfg.model, dst_cfg.model)
    extra = {**state, "encoder.net.no_such_layer.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="do not match the config they came with"):
        grow_generator(Codec(dst_cfg).generator, extra, src_cfg.model, dst_cfg.model)

import pytest

from lrac.config import Config, ConfigError, load_config, preset_names


def test_presets_present():
    assert {"baseline-t1", "baseline-t2"} <= set(preset_names())


def test_yaml_round_trip(tmp_path):
    cfg = load_config("baseline-t2", ["train.lr=1e-4", "quantizer.n_stages=8"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(str(path))
    assert again == cfg
    assert again.train.lr == 1e-4 and again.quantizer.n_stages == 8
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_baseline_values_match_spec():
    t1, t2 = load_config("baseline-t1"), load_config("baseline-t2")
    assert t1.model.encoder.strides == [3, 4, 4, 5] and t1.model.latent_dim == 160
    assert t1.quantizer.codebook_dim == 12 and t2.quantizer.codebook_dim == 24
    assert t2.model.decoder.strides == [5, 4, 3, 2, 2] and t2.model.latent_dim == 320
    assert t1.train.lambda_mel == 5.0 and t1.train.lambda_commit == 10.0
    assert t1.train.segment_samples == 62400 and t1.train.batch_size == 384


@pytest.mark.parametrize("bad, message", [
    (["train.nope=1"], "unknown config key"),
    (["train.lr"], "KEY=VALUE"),
    (["train.batch_size=abc"], "must be an integer"),
    (["model.encoder.strides=3"], "must be a list"),
])
def test_bad_overrides_are_clear(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config("baseline-t1", bad)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="baseline-t1"):
        load_config("baseline-t9")


def test_missing_yaml_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("nope/missing.yaml")

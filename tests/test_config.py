from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml

from lrac.config import Config, ConfigError, load_config, preset_names


def test_presets_present():
    assert {"t1", "t2", "baseline-t1", "baseline-t2"} == set(preset_names())


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
    assert (t1.model.track, t2.model.track) == (1, 2)


def test_the_pitch_section_is_optional():
    t1 = load_config("t1")
    assert t1.model.frame.pitch.symbol_bits == (3, 4)
    plain = t1.override(["model.frame.pitch=null"])
    assert plain.model.frame.pitch is None and Config.from_dict(plain.to_dict()) == plain
    again = plain.override(["model.frame.pitch={}"])       # on again, with the defaults
    assert again.model.frame.pitch == t1.model.frame.pitch


def _legacy_t1() -> dict:
    """The config of a t1 model file of lrac 0.1.0 (the whole Config, the pitch path's keys flat)."""
    data = load_config("t1").to_dict()
    frame = data["model"]["frame"]
    pitch = frame.pop("pitch")
    frame.update(harmonic=True, pitch_bits=pitch["bits"], pitch_every_frames=pitch["every_frames"],
                 pitch_fine_bits=pitch["fine_bits"], pitch_late_onsets=True, pitch_backfill=True,
                 pitch_glide=False, harmonic_phase=True, voicing_floor_db=-70.0, voicing_hold=0.55,
                 voicing_onset_ms=6.67, voicing_onset_dip=0.4, pitch_tolerance=0.06)
    data["train"].update(track=data["model"].pop("track"), disc_lr=0.0, lambda_stft=0.0, num_workers=6,
                         threads=8, lambda_f0=1.0)
    data["data"].update(cache_dir="/gpu/cache", track1_augment=False)
    data["quantizer"].update(ema_decay=0.99, kmeans_iters=50)
    data["score"]["jobs"] = 3
    return data


def test_files_of_earlier_versions_load(recwarn):
    # a file of that time refined the pitch in uniform steps (the only ones then)
    assert Config.from_dict(_legacy_t1()) == load_config("t1", ["model.frame.pitch.fine_levels=uniform"])
    assert not recwarn.list                                # the shipped rules and machine settings: silent
    data = _legacy_t1()
    data["model"]["frame"]["voicing_hold"] = 0.35
    data["train"]["lambda_stft"] = 1.0
    with pytest.warns(UserWarning, match="voicing_hold=0.35 is ignored") as caught:
        assert Config.from_dict(data) == load_config("t1", ["model.frame.pitch.fine_levels=uniform"])
    assert any("lambda_stft=1.0 is ignored" in str(w.message) for w in caught)
    data = _legacy_t1()
    data["model"]["frame"]["harmonic"] = False
    assert Config.from_dict(data).model.frame.pitch is None
    data = _legacy_t1()
    data["model"]["frame"]["harmonic_phase"] = False
    with pytest.raises(ConfigError, match="harmonic_phase"):
        Config.from_dict(data)


@pytest.mark.filterwarnings("ignore:model.frame.voicing_hold")
@pytest.mark.parametrize("preset", ["t1", "t2"])
def test_the_continuation_files_are_runs_of_the_presets(preset):
    """checkpoints/<preset>-*gd.pt, of lrac 0.1.0, start runs of today's t1 and t2."""
    files = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob(f"{preset}-*gd.pt"))
    if not files:
        pytest.skip("no continuation file in checkpoints/")
    for path in files:
        saved = Config.from_dict(torch.load(path, weights_only=False)["config"])
        assert saved.model == load_config(preset).model and saved.quantizer == load_config(preset).quantizer


def test_settings_that_went_are_named_as_such():
    with pytest.raises(ConfigError, match="train.lambda_stft is no longer a setting"):
        load_config("t1", ["train.lambda_stft=1"])
    with pytest.raises(ConfigError, match="model.frame.pitch_fine_bits is now model.frame.pitch.fine_bits"):
        load_config("t1", ["model.frame.pitch_fine_bits=0"])


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


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t1").mkdir()                       # e.g. a run's output folder
    (tmp_path / "runs").mkdir()
    preset = yaml.safe_load((resources.files("lrac") / "presets" / "t1.yaml").read_text())
    assert load_config("t1") == load_config(preset)
    with pytest.raises(ConfigError, match="'runs' is a folder, not a config file"):
        load_config("runs")


def test_missing_yaml_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("nope/missing.yaml")

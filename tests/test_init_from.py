"""Continuing a GAN run in a later session from generator + discriminator weights only."""

import pytest
import torch

from lrac.train.trainer import save_gan_weights
from test_trainer import _cfg, _states, _trainer, _utterances


def test_init_from_gan_weights_continues_step_and_weights(tmp_path):
    utts = _utterances(tmp_path, 2)
    cfg = _cfg(lr_gamma_every_steps=2, lr_gamma=0.5)
    first = _trainer(cfg, tmp_path / "a", utts)
    first.fit(3)
    save_gan_weights(tmp_path / "a" / "last.pt", tmp_path / "gd.pt")
    saved = torch.load(tmp_path / "gd.pt", weights_only=False)
    assert "opt_g" not in saved and "discriminator" in saved and saved["step"] == 3
    assert (tmp_path / "gd.pt").stat().st_size < (tmp_path / "a" / "last.pt").stat().st_size

    later = _trainer(cfg, tmp_path / "b", utts)
    later.load_weights(tmp_path / "gd.pt")
    assert later.step == 3
    assert all(torch.equal(a, b) for a, b in zip(_states(first).values(), _states(later).values()))
    assert later.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.train.lr * 0.5)  # decayed once
    later.fit(4)
    assert later.step == 4

    save_gan_weights(tmp_path / "a" / "last.pt", tmp_path / "gd16.pt", half=True)
    assert (tmp_path / "gd16.pt").stat().st_size < 0.6 * (tmp_path / "gd.pt").stat().st_size
    from_half = _trainer(cfg, tmp_path / "c", utts)
    from_half.load_weights(tmp_path / "gd16.pt")  # loads into the float32 networks
    assert all(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4)
               for a, b in zip(_states(first).values(), _states(from_half).values()))


def test_a_continued_run_can_restart_its_learning_rate_schedule(tmp_path):
    utts = _utterances(tmp_path, 2)
    first = _trainer(_cfg(), tmp_path / "a", utts)
    first.fit(3)
    save_gan_weights(tmp_path / "a" / "last.pt", tmp_path / "gd.pt")
    cfg = _cfg(lr=1e-3, lr_gamma_every_steps=2, lr_gamma=0.5, lr_decay_from_step=3)
    later = _trainer(cfg, tmp_path / "b", utts)
    later.load_weights(tmp_path / "gd.pt")
    assert later.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)  # undecayed at step 3
    later.fit(4)
    assert later.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)
    later.fit(5)  # two steps after step 3
    assert later.opt_g.param_groups[0]["lr"] == pytest.approx(5e-4)
    # a discriminator with its own learning rate decays alike
    own = _trainer(cfg.override(["train.disc_lr=4e-3"]), tmp_path / "c", utts)
    own.load_weights(tmp_path / "gd.pt")
    assert own.opt_d.param_groups[0]["lr"] == pytest.approx(4e-3)
    assert own.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)
    own.fit(5)
    assert own.opt_d.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_init_from_refuses_another_model(tmp_path):
    utts = _utterances(tmp_path, 1)
    first = _trainer(_cfg(), tmp_path / "a", utts)
    first.fit(1)
    other = _trainer(_cfg().override(["quantizer.codebook_dim=8"]), tmp_path / "b", utts)
    with pytest.raises(ValueError, match="do not fit.*quantizer.codebook_dim"):
        other.load_weights(tmp_path / "a" / "last.pt")


def test_init_from_takes_a_changed_setting_that_has_no_weights(tmp_path, capsys):
    """The pitch tracker's voicing has no weights: a run may start from a model trained without it."""
    utts = _utterances(tmp_path, 1)
    first = _trainer(_cfg("lrac-t1", ("model.frame.voicing_hold=0",)), tmp_path / "a", utts)
    first.fit(1)
    later = _trainer(_cfg("lrac-t1", ("model.frame.voicing_hold=0.35",)), tmp_path / "b", utts)
    later.load_weights(tmp_path / "a" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(_states(first).values(), _states(later).values()))
    assert "model.frame.voicing_hold: 0.0 -> 0.35" in capsys.readouterr().out
    assert later.generator.encoder.net.pitch.hold_threshold == 0.35


def test_average_generators_is_the_mean_and_a_model_file(tmp_path):
    from lrac import Codec
    from lrac.train.trainer import average_generators
    utts = _utterances(tmp_path, 2)
    cfg = _cfg("lrac-t1", checkpoint_every_steps=1)
    run = _trainer(cfg, tmp_path / "a", utts)
    run.fit(1)
    (tmp_path / "a" / "last.pt").rename(tmp_path / "s1.pt")
    run.fit(2)
    files = [tmp_path / "s1.pt", tmp_path / "a" / "last.pt"]
    average_generators(files, tmp_path / "avg.pt")
    gens = [torch.load(f, weights_only=False)["generator"] for f in files]
    avg = torch.load(tmp_path / "avg.pt", weights_only=False)
    name = "decoder.net.backbone.out.weight"
    assert not torch.equal(gens[0][name], gens[1][name])
    assert torch.allclose(avg["generator"][name], (gens[0][name] + gens[1][name]) / 2)
    assert avg["averaged_steps"] == [1, 2]
    codec = Codec.load(tmp_path / "avg.pt")
    assert codec.decode(codec.encode(torch.zeros(1, 1, 2400), 6000)).shape == (1, 1, 2400)
    # learnt codebooks do not average; another model does not either
    baseline = _trainer(_cfg(), tmp_path / "b", utts)
    baseline.fit(1)
    with pytest.raises(ValueError, match="fixed quantiser grid"):
        average_generators([tmp_path / "b" / "last.pt"], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="another model"):
        average_generators([tmp_path / "b" / "last.pt", tmp_path / "s1.pt"], tmp_path / "x.pt")


def test_init_from_resets_the_other_machines_settings(tmp_path):
    """A file trained elsewhere (a GPU machine with 6 data workers) must not start 6 workers here."""
    import yaml
    from click.testing import CliRunner

    from lrac import Codec
    from lrac.cli.train import main

    elsewhere = _cfg("lrac-t1", ("train.num_workers=6", "train.threads=8", "data.cache_dir=/gpu/cache",
                                 "data.augment_cache_mb=16000"))
    Codec(elsewhere).save(tmp_path / "m.pt")
    args = ["--track", "1", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
            "--init-from", str(tmp_path / "m.pt"), "--print-config"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    cfg = yaml.safe_load(result.output)
    assert (cfg["train"]["num_workers"], cfg["train"]["threads"], cfg["data"]["cache_dir"]) == (0, 0, "")
    assert cfg["data"]["augment_cache_mb"] == 2048.0
    assert cfg["train"]["segment_samples"] == elsewhere.train.segment_samples  # the recipe carries over
    result = CliRunner().invoke(main, args + ["--set", "train.num_workers=2"], catch_exceptions=False)
    assert yaml.safe_load(result.output)["train"]["num_workers"] == 2


def test_init_from_grows_a_smaller_frame_model(tmp_path, capsys):
    """A run with more decoder blocks starts from a smaller run's weights: the trained blocks keep
    their places and the new one starts as the identity (lrac.train.grow)."""
    utts = _utterances(tmp_path, 1)
    first = _trainer(_cfg("lrac-t1"), tmp_path / "a", utts)
    first.fit(1)
    later = _trainer(_cfg("lrac-t1", ("model.frame.decoder_layers=5",)), tmp_path / "b", utts)
    later.load_weights(tmp_path / "a" / "last.pt")
    assert "grown decoder: 4 -> 5 blocks (0 new look-ahead block(s) in front, 1 at the end)" in capsys.readouterr().out
    old, new = first.generator.decoder.net.backbone.blocks, later.generator.decoder.net.backbone.blocks
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new[:4].state_dict().values()))
    assert torch.count_nonzero(new[4].gamma) == 0
    later.fit(2)   # and it trains
    assert torch.count_nonzero(new[4].gamma) > 0

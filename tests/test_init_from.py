"""Continuing a run later from generator + discriminator weights only (a continuation file), and
averaging a run's checkpoints."""

import pytest
import torch

from lrac.train.checkpoint import average_generators, save_gan_weights
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
    assert later.gan.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.train.lr * 0.5)  # decayed once
    later.fit(4)
    assert later.step == 4

    save_gan_weights(tmp_path / "a" / "last.pt", tmp_path / "gd16.pt", half=True)
    assert (tmp_path / "gd16.pt").stat().st_size < 0.6 * (tmp_path / "gd.pt").stat().st_size
    from_half = _trainer(cfg, tmp_path / "c", utts)
    from_half.load_weights(tmp_path / "gd16.pt")  # loads into the float32 networks
    assert all(torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4)
               for a, b in zip(_states(first).values(), _states(from_half).values()))
    from lrac.codec import Codec   # the float16 file names its own weights' id, which Codec.load checks
    assert Codec.load(tmp_path / "gd16.pt").model_id != Codec.load(tmp_path / "gd.pt").model_id


def test_a_continued_run_can_restart_its_learning_rate_schedule(tmp_path):
    utts = _utterances(tmp_path, 2)
    first = _trainer(_cfg(), tmp_path / "a", utts)
    first.fit(3)
    save_gan_weights(tmp_path / "a" / "last.pt", tmp_path / "gd.pt")
    cfg = _cfg(lr=1e-3, lr_gamma_every_steps=2, lr_gamma=0.5, lr_decay_from_step=3)
    later = _trainer(cfg, tmp_path / "b", utts)
    later.load_weights(tmp_path / "gd.pt")
    assert later.gan.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)  # undecayed at step 3
    later.fit(4)
    assert later.gan.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)
    later.fit(5)  # two steps after step 3
    for opt in (later.gan.opt_g, later.gan.opt_d):   # the discriminator's decays alike
        assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_init_from_refuses_another_model(tmp_path):
    utts = _utterances(tmp_path, 1)
    first = _trainer(_cfg(), tmp_path / "a", utts)
    first.fit(1)
    other = _trainer(_cfg().override(["quantizer.codebook_dim=8"]), tmp_path / "b", utts)
    with pytest.raises(ValueError, match="do not fit.*quantizer.codebook_dim"):
        other.load_weights(tmp_path / "a" / "last.pt")


def test_average_generators_is_the_mean_and_a_model_file(tmp_path):
    from lrac import Codec
    utts = _utterances(tmp_path, 2)
    cfg = _cfg("t1", checkpoint_every_steps=1)
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
    assert codec.made == "the mean of the generators of steps [1, 2]"
    assert codec.decode(codec.encode(torch.zeros(1, 1, 2400), 6000)).shape == (1, 1, 2400)
    # learnt codebooks do not average; another model does not either
    baseline = _trainer(_cfg(), tmp_path / "b", utts)
    baseline.fit(1)
    with pytest.raises(ValueError, match="fixed quantiser grid"):
        average_generators([tmp_path / "b" / "last.pt"], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="another model"):
        average_generators([tmp_path / "b" / "last.pt", tmp_path / "s1.pt"], tmp_path / "x.pt")


def test_init_from_takes_the_recipe_of_the_file_it_starts_from(tmp_path):
    """A continuation file carries its run's training settings; a model file takes the preset's."""
    import yaml
    from click.testing import CliRunner

    from lrac import Codec
    from lrac.cli.train import main

    utts = _utterances(tmp_path, 1)
    run = _trainer(_cfg("t1", lr=1.25e-4), tmp_path / "a", utts)
    run.fit(1)
    save_gan_weights(tmp_path / "a" / "last.pt", tmp_path / "gd.pt")
    Codec("t1").save(tmp_path / "m.pt")

    def config(*args: str) -> dict:
        result = CliRunner().invoke(main, [*args, "--print-config"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return yaml.safe_load(result.output)

    continued = config("--init-from", str(tmp_path / "gd.pt"), "--set", "train.keep_best=3")
    assert continued["train"]["lr"] == 1.25e-4 and continued["train"]["keep_best"] == 3
    assert continued["train"]["segment_samples"] == run.cfg.train.segment_samples
    started = config("--init-from", str(tmp_path / "m.pt"), "--track", "2")
    assert started["train"] == config("--config", "t2")["train"] and started["model"]["track"] == 2


def test_init_from_grows_a_smaller_frame_model(tmp_path):
    """A run with more decoder blocks starts from a smaller run's weights: the trained blocks keep
    their places and the new one starts as the identity (lrac.train.grow)."""
    utts = _utterances(tmp_path, 1)
    first = _trainer(_cfg("t1"), tmp_path / "a", utts)
    first.fit(1)
    later = _trainer(_cfg("t1", ("model.frame.decoder_layers=5",)), tmp_path / "b", utts)
    changes = later.load_weights(tmp_path / "a" / "last.pt")
    assert "model.frame.decoder_layers: 4 -> 5" in changes
    assert any(line.startswith("grown decoder: 4 -> 5 blocks (0 new look-ahead block(s) in front, 1 at the end)")
               for line in changes)
    old, new = first.gan.generator.decoder.net.backbone.blocks, later.gan.generator.decoder.net.backbone.blocks
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new[:4].state_dict().values()))
    assert torch.count_nonzero(new[4].gamma) == 0
    later.fit(2)   # and it trains
    assert torch.count_nonzero(new[4].gamma) > 0


def test_a_same_weights_version_changes_a_rule_and_keeps_the_weights(tmp_path):
    """checkpoints/ship.py --set: a coding rule without weights changes (new model id), the weights
    stay; a setting that would need other weights is refused."""
    from lrac.codec import Codec
    from lrac.train.checkpoint import export_model
    src = tmp_path / "src.pt"
    Codec.pretrained("t1").save(src)
    old = Codec.load(src)
    new = export_model(src, tmp_path / "new.pt", "a note", "t1", ["model.frame.pitch.fine_levels=uniform"])
    loaded = Codec.load(tmp_path / "new.pt")
    assert loaded.config.model.frame.pitch.fine_levels == "uniform" != old.config.model.frame.pitch.fine_levels
    assert loaded.model_id == new.model_id != old.model_id and loaded.note == "a note"
    for key, value in old.generator.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[key], value), key
    with pytest.raises(ValueError, match="decoder_dim=128: changes the model's weights"):
        export_model(src, tmp_path / "bad.pt", "a note", "t1", ["model.frame.decoder_dim=128"])


@pytest.mark.parametrize(("args", "message"), [
    (["missing.pt", "out.pt", "a note"], "missing.pt: model file not found"),
    (["SRC", "out.pt", "a note", "t1", "--set", "model.frame.decoder_dim=128"], "changes the model's weights")])
def test_ship_script_reports_a_bad_source_or_setting_in_one_line(tmp_path, args, message):
    import subprocess
    import sys
    from pathlib import Path

    from lrac.codec import Codec
    Codec("t1").save(tmp_path / "src.pt")
    args = [str(tmp_path / "src.pt") if a == "SRC" else a for a in args]
    script = Path(__file__).resolve().parents[1] / "checkpoints" / "ship.py"
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out.pt").exists()

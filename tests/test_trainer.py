"""The training loop: the loss falls on real speech, resume is exact, two gloo processes stay in
sync, runs stop cleanly (a time budget, signals, kills) and log strict JSON."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import speechlike
from lrac.config import load_config
from lrac.train.data import ChunkStream, Utterance, load_source
from lrac.train.distributed import DistInfo
from lrac.train.gan import GanStep
from lrac.train.trainer import Trainer

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LRAC_DATA", REPO.parent / "shared" / "data"))
SEGMENT = 4800  # 0.2 s: small enough for CPU tests, longer than the largest STFT window (2048)


def _cfg(preset: str = "baseline-t1", extra: tuple[str, ...] = (), **train):
    # short chunks, and the GAN from the first step (t1's recipe trains without it, and with a loss
    # that needs longer chunks)
    overrides = [f"train.segment_samples={SEGMENT}", "train.batch_size=2", "train.log_every_steps=1000",
                 "train.checkpoint_every_steps=1000", "train.checkpoint_every_minutes=0",
                 "train.warmup_steps=0", "train.lambda_estoi=0", *extra]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(preset, overrides)


def _utterances(tmp_path: Path, n: int = 3) -> list[Utterance]:
    """Real speech from shared/data when present, else generated voiced-like audio."""
    listing = SHARED / "splits" / "train.speech.txt"
    if listing.is_file():
        return load_source(listing)[:n]
    utts = []
    for i in range(n):
        t = np.arange(24000) / 24000
        f0 = 120 + 30 * i
        audio = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12)) * 0.1
        audio *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
        path = tmp_path / f"gen{i}.wav"
        sf.write(path, audio.astype(np.float32), 24000)
        utts.append(Utterance(f"gen{i}", str(path)))
    return utts


def _trainer(cfg, out, utts, dist_info=None, buffer=4, workers=0):
    dist_info = dist_info or DistInfo()
    stream = ChunkStream(utts, cfg.train.segment_samples, buffer_size=buffer, seed=cfg.train.seed,
                         rank=dist_info.rank, world=dist_info.world)
    return Trainer(cfg, out, stream, None, dist_info, progress=False, workers=workers)


@pytest.mark.parametrize("preset", ["baseline-t1", "t1"])
def test_loss_falls_on_a_single_clip(tmp_path, preset):
    utts = _utterances(tmp_path, 1)
    trainer = _trainer(_cfg(preset, lr=1e-3), tmp_path / "run", utts, buffer=1)
    x, y = trainer.stream.next_batch(2)  # one fixed batch of one real clip
    mels = []
    for step in range(40):
        losses = trainer.gan.train_step(x, y, step)
        trainer.gan.after_step(step + 1)
        mels.append(losses["mel"])
        assert np.isfinite(losses["g_loss"]) and "d_loss" in losses
    assert np.mean(mels[-5:]) < 0.8 * np.mean(mels[:3]), mels


def _states(trainer):
    return {**{f"g.{k}": v for k, v in trainer.gan.generator.state_dict().items()},
            **{f"d.{k}": v for k, v in trainer.gan.disc.state_dict().items()}}


@pytest.mark.parametrize("workers", [0, 2], ids=["thread", "2-data-workers"])
def test_resume_is_exact(tmp_path, workers):
    utts = _utterances(tmp_path, 3)
    # also covers the reconstruction-only start (warmup), and the random levels (torch's generator)
    cfg = _cfg(extra=("data.level_db=[-20, 0]",), warmup_steps=2)
    straight = _trainer(cfg, tmp_path / "a", utts, workers=workers)
    straight.fit(6)
    first = _trainer(cfg, tmp_path / "b", utts, workers=workers)
    first.fit(3)
    assert (tmp_path / "b" / "last.pt").is_file()
    del first  # "killed": a fresh trainer continues from the checkpoint alone
    resumed = _trainer(cfg, tmp_path / "b", utts, workers=workers)
    resumed.load_checkpoint(tmp_path / "b" / "last.pt")
    assert resumed.step == 3
    resumed.fit(6)
    a, b = _states(straight), _states(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.gan.opt_g.state_dict()["state"][0]["step"] == resumed.gan.opt_g.state_dict()["state"][0]["step"]
    # the checkpoint is also a model file
    from lrac import Codec
    codec = Codec.load(tmp_path / "b" / "last.pt")
    assert codec.decode(codec.encode(torch.zeros(1, 1, 2400), 1000)).shape == (1, 1, 2400)


def test_a_resume_takes_a_changed_learning_rate_schedule_at_once(tmp_path):
    """A run continued with ``train.lr_decay_from_step`` (or ``train.lr``) changed restarts its
    schedule from the first step after the resume, not at the next decay."""
    utts = _utterances(tmp_path, 2)
    cfg = _cfg(lr=1e-3, lr_gamma=0.5, lr_gamma_every_steps=2)
    first = _trainer(cfg, tmp_path / "run", utts)
    first.fit(5)
    assert first.gan.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 ** 2)
    for extra, lr in (((), 1e-3 * 0.5 ** 2), (("train.lr_decay_from_step=5",), 1e-3),
                      (("train.lr=4e-4", "train.lr_decay_from_step=3"), 4e-4 * 0.5)):
        resumed = _trainer(cfg.override(list(extra)), tmp_path / "run", utts)
        resumed.load_checkpoint(tmp_path / "run" / "last.pt")
        assert [o.param_groups[0]["lr"] for o in (resumed.gan.opt_g, resumed.gan.opt_d)] == pytest.approx([lr, lr])


def test_a_resume_with_other_validation_chunks_says_so(tmp_path):
    """The checkpoint knows the chunks its run validated on: a resume on others warns (their
    figures would not continue the log), a resume on the same ones does not."""
    import warnings

    from lrac.train.data import fixed_chunks

    utts = _utterances(tmp_path, 3)
    cfg = _cfg()
    valid = fixed_chunks(utts[:1], SEGMENT, max_chunks=2)
    first = Trainer(cfg, tmp_path / "run", ChunkStream(utts, SEGMENT, buffer_size=4), valid, progress=False)
    first.fit(1)
    same = Trainer(cfg, tmp_path / "run", ChunkStream(utts, SEGMENT, buffer_size=4),
                   tuple(t.clone() for t in valid), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_checkpoint(tmp_path / "run" / "last.pt")
    other = Trainer(cfg, tmp_path / "run", ChunkStream(utts, SEGMENT, buffer_size=4),
                    (valid[0] + 2.0 ** -15, valid[1]), progress=False)
    with pytest.warns(UserWarning, match="validation chunks differ .* up to step 1"):
        other.load_checkpoint(tmp_path / "run" / "last.pt")


def test_nonfinite_loss_skips_step(tmp_path):
    utts = _utterances(tmp_path, 1)
    trainer = _trainer(_cfg(), tmp_path / "run", utts, buffer=1)
    x, y = trainer.stream.next_batch(2)
    before = [p.detach().clone() for p in trainer.gan.g_params]
    with pytest.warns(UserWarning, match="step 1: non-finite generator loss"):   # as the log counts
        trainer.gan.train_step(x, y * float("nan"), 0)
    assert trainer.gan.nonfinite_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(before, trainer.gan.g_params))


def _ddp_worker(rank: int, world: int, init_file: str, out: str, utt_paths: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        utts = [Utterance(f"u{i}", p) for i, p in enumerate(utt_paths)]
        cfg = _cfg(batch_size=4)
        trainer = _trainer(cfg, out, utts, DistInfo(rank, world))
        trainer.fit(3)
        torch.save(_states(trainer), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_stay_identical(tmp_path):
    utts = _utterances(tmp_path, 4)
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "pg"), str(tmp_path), [u.path for u in utts]),
             nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    codebooks = [k for k in r0 if k.endswith(".embed")]
    assert codebooks and all(r0[k].abs().sum() > 0 for k in codebooks)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # weights, codebooks and D identical on both ranks
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["world"] == 2 and len(ckpt["ranks"]) == 2 and ckpt["step"] == 3


def test_max_minutes_stops_with_a_checkpoint(tmp_path):
    utts = _utterances(tmp_path, 1)
    trainer = _trainer(_cfg(max_minutes=1e-6, warmup_steps=100), tmp_path / "run", utts)
    result = trainer.fit(50)
    assert result["step"] == 1  # the budget ran out during the first step
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 1


def test_envelope_loss_joins_the_generator_loss(tmp_path):
    utts = _utterances(tmp_path, 1)
    long = ("train.segment_samples=9600",)
    plain = _trainer(_cfg("t1", long, warmup_steps=100), tmp_path / "a", utts, buffer=1)
    x, y = plain.stream.next_batch(2)
    with_env = _trainer(_cfg("t1", long, warmup_steps=100, lambda_estoi=3.0), tmp_path / "b", utts,
                        buffer=1)
    a, b = plain.gan.train_step(x, y, 0), with_env.gan.train_step(x, y, 0)
    assert "estoi" not in a and 0 < b["estoi"] < 2
    assert b["g_loss"] == pytest.approx(a["g_loss"] + 3.0 * b["estoi"], rel=1e-5)
    with pytest.raises(ValueError, match="train.lambda_estoi needs train.segment_samples >= 8960"):
        _trainer(_cfg("t1", warmup_steps=100, lambda_estoi=1.0), tmp_path / "c", utts)


def test_negative_data_workers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="data workers must be >= 0"):
        _trainer(_cfg(), tmp_path / "a", _utterances(tmp_path, 1), workers=-1)


def test_random_level_scales_input_and_target_alike():
    from lrac.train.augment import random_level
    x, y = torch.ones(64, 1, 10), 2 * torch.ones(64, 1, 10)
    assert random_level(x, y, [0.0, 0.0]) == (x, y)
    gx, gy = random_level(x, y, [-30.0, 0.0])
    gain = gx[:, 0, 0]
    assert torch.equal(gy, 2 * gx) and (gx == gain[:, None, None]).all()      # one gain per chunk
    assert gain.min() >= 10 ** (-30 / 20) and gain.max() <= 1 and gain.std() > 0.1


def test_random_level_raises_quiet_chunks_but_never_past_full_scale():
    from lrac.train.augment import random_level
    quiet = torch.full((256, 1, 10), 0.01)
    loud = torch.cat([torch.full((256, 1, 9), 0.1), torch.full((256, 1, 1), -0.5)], -1)
    gx, gy = random_level(quiet, loud, [-10.0, 20.0])
    gain = gx[:, 0, 0] / 0.01
    assert torch.allclose(gy, loud * gain[:, None, None])
    assert gain.max() == pytest.approx(2.0) and gy.abs().max() <= 1.0 + 1e-6     # capped by the target's peak
    assert (gain < 1).any() and (gain == 2.0).sum() > 50                        # quieter, and raised to the cap


def test_level_augmentation_trains_and_refuses_a_bad_range(tmp_path):
    utts = _utterances(tmp_path, 2)
    run = _trainer(_cfg(extra=("data.level_db=[-30, 0]",)), tmp_path / "a", utts)
    run.fit(2)
    assert run.step == 2
    with pytest.raises(ValueError, match="level_db"):
        _trainer(_cfg(extra=("data.level_db=[10, 0]",)), tmp_path / "b", utts)


def test_memory_check_refuses_a_batch_that_does_not_fit(tmp_path):
    """On the CPU a batch too large for the memory would be killed by the kernel in its first step,
    without a message: the check names the batch that fits instead, and changes nothing of the run."""
    from lrac.train.setup import check_memory

    gan = _trainer(_cfg("baseline-t1"), tmp_path / "run", _utterances(tmp_path, 1)).gan   # EMA codebooks
    state = {k: v.clone() for k, v in gan.generator.state_dict().items()}
    rng = torch.get_rng_state()
    per_chunk = gan.activation_bytes_per_chunk()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, gan.generator.state_dict()[k]) for k, v in state.items())
    # the activations grow with the chunk: twice the chunk, about twice the bytes
    longer = _trainer(_cfg("baseline-t1", segment_samples=2 * SEGMENT), tmp_path / "run2", _utterances(tmp_path, 1))
    assert 1.6 < longer.gan.activation_bytes_per_chunk() / per_chunk < 2.4
    check_memory(gan, 2, available_bytes=int(10 * per_chunk))            # batch 2 fits
    with pytest.raises(ValueError, match=r"train.batch_size 2 .* use --batch-size 1 or less"):
        check_memory(gan, 2, available_bytes=int(2.5 * per_chunk))


def test_train_command_refuses_a_batch_that_does_not_fit(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import lrac.train.setup as setup_module
    from lrac.cli.train import main

    for i in range(2):   # 4 s clips (stage 3 keeps clips of at least 2.9 s)
        sf.write(tmp_path / f"clip{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(96000).astype(np.float32), 24000)
    monkeypatch.setattr(setup_module, "available_memory_bytes", lambda: 50 * 2**20)   # 50 MiB
    result = CliRunner().invoke(main, ["--track", "1", "--config", "t1", "--data", str(tmp_path),
                                       "--out", str(tmp_path / "run"), "--no-progress", "--batch-size", "8",
                                       "--max-steps", "1"])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--batch-size" in error[0] and "GiB is available" in error[0], result.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_erasure_training_trains_the_missing_latent(tmp_path):
    """With train.erasure_prob the decoder gets its missing latent for erased frames and trains it:
    after 30 steps on one clip it has moved from zero, and the model then conceals with it by
    default. The erasures are drawn per step, the same on a rerun. (What the trained concealment
    is worth is measured on real clips: benchmarks/packet_loss.py, docs/packet_loss.md.)"""
    utts = _utterances(tmp_path, 1)
    # the mechanism on t1 without its low-band code, in float32 (docs/packet_loss.md measures the
    # shipped model's concealment)
    cfg = _cfg("t1", ("model.frame.lowband=null",), lr=1e-3, erasure_prob=1.0, erasure_rate=0.3,
               warmup_steps=1000, bf16=False)
    trainer = _trainer(cfg, tmp_path / "run", utts, buffer=1)
    gan = trainer.gan
    frames = SEGMENT // gan.codec.hop_length
    assert torch.equal(gan.erasures_at(5, 2, frames), gan.erasures_at(5, 2, frames))
    assert _trainer(_cfg("t1"), tmp_path / "plain", utts).gan.erasures_at(5, 2, frames) is None
    x, y = trainer.stream.next_batch(2)
    assert gan.codec.default_concealment == "repeat"          # an untrained missing latent: zeros
    for step in range(30):
        gan.train_step(x, y, step)
        gan.after_step(step + 1)
    missing = gan.generator.decoder.missing_latent
    assert missing.abs().sum() > 0 and gan.codec.default_concealment == "learned"


def test_the_concealment_discriminator_sees_the_lossy_and_the_lossless_decode_around_the_longest_loss(tmp_path):
    """``train.lambda_conceal_adv``: with the whole-chunk discriminator off, the discriminator
    trains on 160 ms around the start of each erased chunk's longest run of lost frames, the decode with the losses
    (fake) against the lossless decode (real), and the generator gets the adversarial terms."""
    utts = _utterances(tmp_path, 1)
    cfg = _cfg("t1", ("model.frame.lowband=null",), segment_samples=24000, warmup_steps=1000,
               erasure_prob=0.5, erasure_rate=0.3, lambda_conceal_adv=1.0, disc_lr=3e-4, bf16=False)
    gan = _trainer(cfg, tmp_path / "run", utts).gan
    assert gan.opt_d.param_groups[0]["lr"] == 3e-4 and gan.opt_g.param_groups[0]["lr"] == cfg.train.lr
    x = torch.from_numpy(speechlike(1.0))[None, None].float().expand(2, 1, -1).clone()
    hop, frames = gan.codec.hop_length, 100
    lost = torch.zeros(2, frames, dtype=torch.bool)
    lost[1, 10:12] = lost[1, 30:34] = lost[1, 60:64] = True  # chunk 1: the longest first at 30
    gan.generator.eval()
    with torch.no_grad():
        y_hat = gan.generator(x, 6, lost)[0]
        fake, real = gan._concealment_windows(x, y_hat, lost, 6)
        lossless = gan.generator(x, 6)[0]
    gan.generator.train()
    span = slice(26 * hop, 42 * hop)                        # from 4 frames before, 16 frames
    assert fake.shape == real.shape == (1, 1, 16 * hop)
    assert torch.equal(fake[0, 0], y_hat[1, 0, span]) and torch.allclose(real[0, 0], lossless[1, 0, span])
    assert not torch.allclose(fake, real)
    y_hat = gan.generator(x, 6, lost)[0]                     # no adversarial gradient before the loss
    fake, _ = gan._concealment_windows(x, y_hat, lost, 6)
    grad, = torch.autograd.grad(fake.sum(), y_hat)
    assert not grad[1, 0, 26 * hop:29 * hop].any() and grad[1, 0, 29 * hop:42 * hop].all()
    before = [p.detach().clone() for p in gan.d_params]
    step = next(s for s in range(50) if gan.erasures_at(s, 2, frames) is not None)
    out = gan.train_step(x, x, step)
    assert {"adv", "fm", "d_loss"} <= out.keys()
    assert any(not torch.equal(a, p) for a, p in zip(before, gan.d_params))


def test_erased_chunks_weigh_erasure_recon_weight_in_the_reconstruction_losses(tmp_path):
    utts = _utterances(tmp_path, 1)
    gan = _trainer(_cfg("t1", erasure_recon_weight=0.1), tmp_path / "run", utts).gan
    y = torch.from_numpy(speechlike(0.5))[None, None].float().expand(3, 1, -1).clone()
    y_hat = y + 0.01 * torch.randn_like(y)
    erased = torch.tensor([False, True, True])
    total, values = gan._reconstruction(y_hat, y, erased)
    whole, whole_values = gan.losses(y_hat, y)
    clean, _ = gan.losses(y_hat[:1], y[:1])
    lossy, _ = gan.losses(y_hat[1:], y[1:])
    assert total.item() == pytest.approx((clean + 2 * 0.1 * lossy).item() / 3, rel=1e-5)
    assert all(values[k].item() == pytest.approx(whole_values[k].item(), rel=1e-4) for k in values)
    assert torch.equal(gan._reconstruction(y_hat, y, None)[0], whole)
    with pytest.raises(ValueError, match="one process"):
        GanStep(_cfg("t1", lambda_conceal_adv=1.0), DistInfo(0, 2))
    for setting in ("lambda_conceal_adv", "erasure_recon_weight", "disc_lr"):
        with pytest.raises(ValueError, match="must be >= 0"):
            GanStep(_cfg("t1", **{setting: -1.0}))


def test_a_checkpoint_from_before_the_missing_latent_resumes(tmp_path):
    """A checkpoint written before the decoder had its missing latent (no weight, one optimiser
    parameter fewer) resumes: the latent starts at zero, without optimiser moments."""
    utts = _utterances(tmp_path, 1)
    cfg = _cfg("t1")
    first = _trainer(cfg, tmp_path / "a", utts)
    first.fit(1)
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    del state["generator"]["decoder.missing_latent"]
    n = len(first.gan.g_params)
    state["opt_g"]["param_groups"][0]["params"].remove(n - 1)
    state["opt_g"]["state"].pop(n - 1, None)
    torch.save(state, tmp_path / "old.pt")
    resumed = _trainer(cfg, tmp_path / "b", utts)
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert torch.equal(resumed.gan.generator.decoder.missing_latent, torch.zeros(cfg.model.latent_dim))
    resumed.fit(2)
    assert resumed.step == 2

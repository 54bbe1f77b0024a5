"""The GAN training loop of the LRAC baseline (spec §3): generator step, then discriminator step.

One iteration, with ``x`` the input and ``y`` the target chunk ``[B, 1, T]``:

1. draw the bitrate (one per batch, the same on every rank) and run ``y_hat, commit = G(x, n_q)``;
2. run the discriminator on ``y_hat`` and ``y``; generator loss
   ``1 * hinge_adv + 2 * feature_matching + 5 * mel + 10 * commit``; update G;
3. discriminator hinge loss on the *same* ``y_hat`` (detached) and ``y``; update D.

Because D does not change between steps 2 and 3 and ``y_hat`` is the cached generator output (as
ESPnet's ``cache_generator_outputs``), the discriminator outputs of step 3 equal those of step 2.
We therefore run the discriminator forward once per iteration and back-propagate twice through that
graph: the generator loss only into G's parameters (through D's inputs), the discriminator loss
only into D's parameters. The result is the same computation as ESPnet's four discriminator
forwards and two full backward passes, at about 60 % of the discriminator cost.

Cheaper modes for CPUs: ``train.warmup_steps`` (reconstruction only, no discriminator, for the
first N steps; then ``train.disc_only_steps`` of the discriminator alone, the generator frozen),
fewer ``train.disc_n_ffts`` scales, and ``train.disc_every`` (update D every k steps; the generator
still gets adversarial and feature-matching losses from the current D each step).

Checkpoints: ``OUT/last.pt`` holds the codec (loadable with :meth:`lrac.Codec.load`) plus everything
needed to continue exactly (discriminator, optimisers, schedulers, step, data position and RNG
states of every rank). ``OUT/best/*.pt`` are the ``keep_best`` model files with the lowest validation
mel loss, and ``OUT/best.pt`` the best of them. All writes are atomic.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from lrac.codec import Codec, atomic_torch_save, half_state_dict
from lrac.config import Config
from lrac.models.discriminators import MultiScaleSTFTDiscriminator
from lrac.train.data import ChunkStream, make_prefetcher
from lrac.train.grow import grow_generator
from lrac.train.losses import (EnvelopeCorrelationLoss, LogSTFTLoss, MultiScaleMelLoss,
                               discriminator_adversarial_loss, feature_matching_loss,
                               generator_adversarial_loss)

CHECKPOINT_FORMAT = "lrac-train-checkpoint"


# --------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    """Rank and world size of this process (``world == 1`` without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    The backend defaults to ``nccl`` with CUDA and ``gloo`` on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return DistInfo(dist.get_rank(), dist.get_world_size())


def _all_reduce_(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average ``.grad`` over ranks in one flat all-reduce (used for D, whose graph is shared)."""
    if world <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------


def _available_memory_bytes() -> int | None:
    """MemAvailable of ``/proc/meminfo`` in bytes (None where there is none: not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def random_level(x: torch.Tensor, y: torch.Tensor, level_db: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target ``[B, 1, T]`` times the same gain per chunk, uniform in dB over ``level_db``
    (``[low, high]``; ``[0, 0]`` leaves them). A gain above 0 dB stops where the chunk's peak
    (input or target) reaches full scale: a louder talker, never a clipped one. Draws from torch's
    global generator, which checkpoints save, so a resumed run draws the same gains."""
    low, high = level_db
    if low == high == 0:
        return x, y
    gain = 10 ** ((low + (high - low) * torch.rand(x.shape[0], 1, 1)) / 20)
    if high > 0:
        peak = torch.maximum(x.abs().amax(-1, keepdim=True), y.abs().amax(-1, keepdim=True)).float()
        headroom = (1.0 / peak.clamp(min=1e-6)).clamp(min=1.0).cpu()
        gain = torch.where(gain > 1, torch.minimum(gain, headroom), gain)
    return x * gain.to(x), y * gain.to(y)


def random_crop(a: torch.Tensor, b: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random span of ``samples`` from ``a`` and ``b`` ``[B, 1, T]``, one offset per chunk
    (torch's global generator, which checkpoints save); 0 or ``samples >= T`` keeps them whole."""
    length = a.shape[-1]
    if not samples or samples >= length:
        return a, b
    start = torch.randint(0, length - samples + 1, (a.shape[0], 1, 1)).to(a.device)
    index = start + torch.arange(samples, device=a.device)
    return a.gather(-1, index), b.gather(-1, index.to(b.device))


class Trainer:
    """Trains a :class:`lrac.Codec` from a chunk stream.

    Args:
        cfg: the whole config (``train`` section for the loop, ``model``/``quantizer`` for the codec).
        out_dir: where ``last.pt``, ``best/``, ``train.jsonl`` and TensorBoard logs go.
        stream: this rank's training chunks (``ChunkStream`` over ``(input, target)`` pairs).
        valid: fixed validation ``(input, target)`` chunks ``[N, 1, T]`` (the same on every rank), or None.
        dist_info: rank and world size; the global ``train.batch_size`` is split across ranks.
        device: ``"cpu"`` or a CUDA device.
        progress: show a tqdm bar (main rank only).
    """

    def __init__(self, cfg: Config, out_dir: str | Path, stream: ChunkStream,
                 valid: tuple[torch.Tensor, torch.Tensor] | None = None,
                 dist_info: DistInfo | None = None, device: str | torch.device = "cpu",
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.tc = cfg.train
        self.out_dir = Path(out_dir)
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls, as cuDNN convs already use
        self.progress = progress and self.dist.main
        if self.tc.batch_size % self.dist.world:
            raise ValueError(f"train.batch_size={self.tc.batch_size} is not divisible by the "
                             f"{self.dist.world} processes")
        self.batch_per_rank = self.tc.batch_size // self.dist.world
        if self.tc.num_workers < 0:
            raise ValueError(f"train.num_workers must be >= 0, got {self.tc.num_workers}")
        if self.tc.disc_every < 1:
            raise ValueError(f"train.disc_every must be >= 1, got {self.tc.disc_every}")
        for key in ("disc_only_steps", "disc_lr"):
            if getattr(self.tc, key) < 0:
                raise ValueError(f"train.{key} must be >= 0, got {getattr(self.tc, key)}")
        segment = self.tc.disc_segment_samples
        if segment and not max(self.tc.disc_n_ffts) <= segment:
            raise ValueError(f"train.disc_segment_samples ({segment}) must be 0 (whole chunks) or at least "
                             f"the largest discriminator FFT (train.disc_n_ffts: {max(self.tc.disc_n_ffts)})")
        level = cfg.data.level_db
        if len(level) != 2 or not -60 <= level[0] <= level[1] <= 30:
            raise ValueError(f"data.level_db must be [low, high] dB with -60 <= low <= high <= 30, "
                             f"got {level}")

        torch.manual_seed(self.tc.seed)  # identical initial weights on every rank
        self.codec = Codec(cfg)
        self.generator = self.codec.generator.to(self.device).train()
        self.stage_choices = [self.codec.stages_for_bitrate(b) for b in self.codec.bitrates_bps]
        weights = np.asarray(self.tc.bitrate_weights or [1.0] * len(self.stage_choices), dtype=float)
        if len(weights) != len(self.stage_choices) or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(f"train.bitrate_weights={self.tc.bitrate_weights} must give one "
                             f"non-negative weight per bitrate {self.codec.bitrates_bps}")
        self.stage_probs = weights / weights.sum()
        self.disc = MultiScaleSTFTDiscriminator(self.tc.disc_n_ffts, self.tc.disc_filters).to(self.device)
        self.mel_loss = MultiScaleMelLoss(cfg.model.sample_rate, self.tc.mel_n_ffts,
                                          self.tc.mel_bins).to(self.device)
        self.stft_loss = (LogSTFTLoss(self.tc.stft_n_ffts).to(self.device) if self.tc.lambda_stft > 0
                          else None)
        self.estoi_loss = (EnvelopeCorrelationLoss(cfg.model.sample_rate).to(self.device)
                           if self.tc.lambda_estoi > 0 else None)
        if self.estoi_loss is not None and self.tc.segment_samples < self.estoi_loss.min_samples:
            raise ValueError(f"train.lambda_estoi needs train.segment_samples >= "
                             f"{self.estoi_loss.min_samples} (one segment of the envelope loss), "
                             f"got {self.tc.segment_samples}")
        self.g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in self.disc.parameters() if p.requires_grad]
        self.opt_g = self._optimizer(self.g_params, self.tc.lr)
        self.opt_d = self._optimizer(self.d_params, self.tc.disc_lr or self.tc.lr)
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, self.tc.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, self.tc.lr_gamma)
        self.g_model: nn.Module = self.generator
        if self.dist.world > 1:
            # Codebooks synchronise themselves (all-reduced statistics), so buffers are not broadcast;
            # at 1 kbps stages 2-6 get no gradient, hence find_unused_parameters.
            ddp = nn.parallel.DistributedDataParallel
            no_buffer_sync = ({"forward_sync_buffers": False}  # torch >= 2.12 name
                              if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
                              else {"broadcast_buffers": False})
            self.g_model = ddp(self.generator, find_unused_parameters=True, **no_buffer_sync)
            for p in self.disc.parameters():
                dist.broadcast(p.data, src=0)

        self.stream = stream
        self.data = make_prefetcher(stream, self.batch_per_rank, self.tc.num_workers)
        self.valid = valid
        self.step = 0
        self.nonfinite_steps = 0
        self.best: list[dict[str, Any]] = []   # {"loss", "step", "path"}, best first
        self._stop_signal: int | None = None
        self._last_save = time.monotonic()
        self._fit_start = time.monotonic()
        self._tb = None
        self._jsonl = None

    def _optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.RAdam(params, lr=lr, betas=tuple(self.tc.betas), eps=self.tc.adam_eps,
                                 weight_decay=0.0)

    # -- one iteration ----------------------------------------------------------------------

    def stages_at(self, step: int) -> int:
        """RVQ stages for ``step``: a draw from ``stage_choices`` seeded by (seed, step), equal on all ranks."""
        rng = np.random.default_rng([self.tc.seed, step, 5])
        return int(self.stage_choices[int(rng.choice(len(self.stage_choices), p=self.stage_probs))])

    def _finite_everywhere(self, value: torch.Tensor) -> bool:
        flag = self._rank_tensor([0.0 if bool(torch.isfinite(value)) else 1.0])
        return _all_reduce_(flag, self.dist.world).item() == 0

    def _rank_tensor(self, values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A small tensor that the ranks reduce: on the training device when there are several
        (NCCL reduces GPU tensors only), else on the CPU (no device copy per step)."""
        return torch.tensor(values, dtype=dtype, device=self.device if self.dist.world > 1 else "cpu")

    def _clip_and_check(self, params: list[nn.Parameter]) -> bool:
        """Clip gradients (when ``grad_clip > 0``); False when their norm is not finite."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        if self.tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.tc.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return bool(torch.isfinite(norm))

    def _skip(self, what: str) -> None:
        self.nonfinite_steps += 1
        warnings.warn(f"step {self.step}: non-finite {what}, update skipped "
                      f"({self.nonfinite_steps} skipped so far)", stacklevel=3)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One iteration on input ``x`` and target ``y`` (``[B, 1, T]``); returns the losses."""
        tc = self.tc
        if tc.warmup_steps <= self.step < tc.warmup_steps + tc.disc_only_steps:
            return self._disc_only_step(x, y)
        n_q = self.stages_at(self.step)
        y_hat, commit = self.g_model(x, n_q)
        y_hat = y_hat[..., :y.shape[-1]]
        mel = self.mel_loss(y_hat, y)
        g_loss = tc.lambda_mel * mel + tc.lambda_commit * commit
        out = {"n_q": float(n_q), "mel": mel.item(), "commit": commit.item()}
        if self.stft_loss is not None:
            stft = self.stft_loss(y_hat, y)
            g_loss = g_loss + tc.lambda_stft * stft
            out["stft"] = stft.item()
        if self.estoi_loss is not None:
            estoi = self.estoi_loss(y_hat, y)
            g_loss = g_loss + tc.lambda_estoi * estoi
            out["estoi"] = estoi.item()

        use_disc = self.step >= tc.warmup_steps
        update_disc = use_disc and (self.step - tc.warmup_steps) % tc.disc_every == 0
        if use_disc:
            fake_wav, real_wav = random_crop(y_hat, y, tc.disc_segment_samples)
            # cached(): each weight-normed D weight is computed once for both forwards.
            with parametrize.cached():
                fake = self.disc(fake_wav)
                with nullcontext() if update_disc else torch.no_grad():
                    real = self.disc(real_wav)
            adv = generator_adversarial_loss(fake)
            fm = feature_matching_loss(fake, real)
            g_loss = g_loss + tc.lambda_adv * adv + tc.lambda_feat * fm
            out.update(adv=adv.item(), fm=fm.item())
        out["g_loss"] = g_loss.item()

        if not self._finite_everywhere(g_loss):
            self._skip("generator loss")
            return out
        self.opt_g.zero_grad(set_to_none=True)
        # Only into G: D's weight gradients are not needed for the generator update.
        g_loss.backward(inputs=self.g_params, retain_graph=update_disc)
        if self._clip_and_check(self.g_params):
            self.opt_g.step()
        else:
            self._skip("generator gradients")

        if update_disc:
            self._update_disc(real, fake, out)
        return out

    def _disc_only_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """A ``train.disc_only_steps`` iteration: the frozen generator codes ``x``, D learns."""
        n_q = self.stages_at(self.step)
        self.generator.eval()  # no codebook statistics move either
        try:
            with torch.no_grad():
                y_hat = self.g_model(x, n_q)[0][..., :y.shape[-1]]
                out = {"n_q": float(n_q), "mel": self.mel_loss(y_hat, y).item()}
        finally:
            self.generator.train()
        fake_wav, real_wav = random_crop(y_hat, y, self.tc.disc_segment_samples)
        with parametrize.cached():
            fake, real = self.disc(fake_wav), self.disc(real_wav)
        self._update_disc(real, fake, out)
        return out

    def _update_disc(self, real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]],
                     out: dict[str, float]) -> None:
        """Hinge-loss step of D on its outputs for ``real`` and ``fake`` audio; losses into ``out``."""
        real_loss, fake_loss = discriminator_adversarial_loss(real, fake)
        d_loss = real_loss + fake_loss
        out.update(d_loss=d_loss.item(), d_real=real_loss.item(), d_fake=fake_loss.item())
        if not self._finite_everywhere(d_loss):
            self._skip("discriminator loss")
            return
        self.opt_d.zero_grad(set_to_none=True)
        # Only into D: equivalent to using y_hat.detach() (the generator was updated already).
        d_loss.backward(inputs=self.d_params)
        _average_gradients(self.d_params, self.dist.world)
        if self._clip_and_check(self.d_params):
            self.opt_d.step()
        else:
            self._skip("discriminator gradients")

    def _after_step(self) -> None:
        self.step += 1
        since = self.step - self.tc.lr_decay_from_step
        if since > 0 and since % self.tc.lr_gamma_every_steps == 0:  # ESPnet: one "epoch" = 10k iterations
            self._set_learning_rates()

    def _set_learning_rates(self) -> None:
        """``lr * lr_gamma ** n`` with ``n`` the decays since ``lr_decay_from_step``, on both
        optimisers (set here rather than by ``sched.step()``, which warns while D is unused)."""
        decays = max(self.step - self.tc.lr_decay_from_step, 0) // self.tc.lr_gamma_every_steps
        for sched in (self.sched_g, self.sched_d):
            sched.last_epoch = decays
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
                group["lr"] = base * self.tc.lr_gamma ** decays

    # -- validation ---------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mel loss (unweighted) on the validation chunks at every bitrate, and their mean ``valid_mel``.

        The chunks are shared out across ranks and the sums all-reduced."""
        if self.valid is None:
            return {}
        x_all, y_all = self.valid
        idx = list(range(self.dist.rank, len(x_all), self.dist.world))
        self.generator.eval()
        results = {}
        try:
            for bitrate, n_q in zip(self.codec.bitrates_bps, self.stage_choices):
                total = self._rank_tensor([0.0, 0.0], torch.float64)
                for start in range(0, len(idx), self.batch_per_rank):
                    sel = idx[start:start + self.batch_per_rank]
                    x, y = x_all[sel].to(self.device), y_all[sel].to(self.device)
                    y_hat = self.generator(x, n_q)[0]
                    total[0] += self.mel_loss(y_hat[..., :y.shape[-1]], y).item() * len(sel)
                    total[1] += len(sel)
                _all_reduce_(total, self.dist.world)
                results[f"valid_mel_{bitrate // 1000}kbps"] = float(total[0] / max(total[1], 1))
        finally:
            self.generator.train()
        results["valid_mel"] = float(np.mean(list(results.values())))
        return results

    def _keep_best(self, loss: float) -> None:
        """Save this model into the best-K set if it belongs there; drop the one that falls out."""
        if not self.dist.main or self.tc.keep_best <= 0:
            return
        if len(self.best) >= self.tc.keep_best and loss >= self.best[-1]["loss"]:
            return
        path = self.out_dir / "best" / f"step{self.step:09d}.pt"
        self.codec.save(path, extra={"step": self.step, "valid_mel": loss})
        self.best.append({"loss": loss, "step": self.step, "path": str(path)})
        self.best.sort(key=lambda b: b["loss"])
        for dropped in self.best[self.tc.keep_best:]:
            Path(dropped["path"]).unlink(missing_ok=True)
        self.best = self.best[: self.tc.keep_best]
        if self.best[0]["step"] == self.step:
            tmp = self.out_dir / ".best.pt.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, self.out_dir / "best.pt")

    # -- checkpoints --------------------------------------------------------------------------

    def _gather(self, obj: Any) -> list[Any]:
        if self.dist.world == 1:
            return [obj]
        out: list[Any] = [None] * self.dist.world
        dist.all_gather_object(out, obj)
        return out

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the full training state (all ranks' data positions and RNG states) atomically.

        Every rank must call it (it gathers); only the main rank writes."""
        path = Path(path) if path else self.out_dir / "last.pt"
        per_rank = self._gather({"data": self.data.state_dict(), "torch_rng": torch.get_rng_state()})
        if self.dist.main:
            self.codec.save(path, extra={
                "format_train": CHECKPOINT_FORMAT, "step": self.step,
                "discriminator": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "nonfinite_steps": self.nonfinite_steps, "best": self.best,
                "world": self.dist.world, "ranks": per_rank})
        self._last_save = time.monotonic()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from a :meth:`save_checkpoint` file (same model config and process count)."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format_train") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an lrac-train checkpoint (a model file cannot be resumed)")
        saved = Config.from_dict(state["config"])
        if saved.model != self.cfg.model or saved.quantizer != self.cfg.quantizer:
            raise ValueError(f"{path}: the checkpoint's model/quantizer config differs from this run's; "
                             "resume with the config it was trained with")
        if state["world"] != self.dist.world:
            raise ValueError(f"{path}: saved by {state['world']} process(es), resumed with "
                             f"{self.dist.world}; resume with the same --nproc_per_node")
        self.generator.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.step = int(state["step"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.best = list(state.get("best", []))
        mine = state["ranks"][self.dist.rank]
        self.data.close()
        self.data = make_prefetcher(self.stream, self.batch_per_rank, self.tc.num_workers, mine["data"])
        torch.set_rng_state(mine["torch_rng"])

    def load_weights(self, path: str | Path) -> None:
        """Start from the generator (and discriminator, when present) weights of ``path``: a model
        file, a :func:`save_gan_weights` file or a full checkpoint. Optimisers start afresh; the
        step count continues, so warm-up and learning-rate decay pick up where the run was.

        The run's model config may differ from the file's where the weights still fit (a setting
        without weights of its own, such as the pitch tracker's voicing), or where it grows the
        file's frame backbones (more blocks, look-ahead or hidden units: :mod:`lrac.train.grow`,
        new weights inert); the differences are printed. Weights that do not fit are refused."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or "generator" not in state:
            raise ValueError(f"{path}: no generator weights inside")
        saved = Config.from_dict(state["config"])
        changes = saved.model_changes(self.cfg)
        if state.get("weight_norm_folded"):
            raise ValueError(f"{path}: weight norm was folded (an inference export); "
                             "start from a training checkpoint or save_gan_weights file")
        unfit = f"{path}: its weights do not fit this run's model (the config differs: "
        grown: list[str] = []
        try:
            self.generator.load_state_dict(state["generator"])
        except RuntimeError as exc:
            try:   # a larger frame model than the file's: grow the file's weights into it
                grown = grow_generator(self.generator, state["generator"], saved.model, self.cfg.model)
            except ValueError as why:
                raise ValueError(f"{unfit}{'; '.join([*changes, str(why)])})") from exc
        try:
            if "discriminator" in state:
                self.disc.load_state_dict(state["discriminator"])
        except RuntimeError as exc:
            raise ValueError(f"{unfit}the discriminator)") from exc
        if changes and self.dist.main:
            print(f"starting from {path} with a changed model config: {'; '.join(changes)}", flush=True)
            for line in grown:
                print(f"grown {line}", flush=True)
        self.step = int(state.get("step", 0))
        self._set_learning_rates()  # the learning rate the run had reached

    # -- logging ------------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        if self._jsonl is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.out_dir / "train.jsonl", "a", buffering=1)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._tb = None
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["step"])

    def _save_and_stop_flags(self) -> tuple[bool, bool]:
        """``(save now, stop now)``: the step/time interval and stop signals as rank 0 sees them,
        broadcast so that every rank takes the same branch."""
        minutes = self.tc.checkpoint_every_minutes
        budget = self.tc.max_minutes
        stop = (self._stop_signal is not None
                or (budget > 0 and time.monotonic() - self._fit_start > 60 * budget))
        save = (stop or self.step % self.tc.checkpoint_every_steps == 0
                or (minutes > 0 and time.monotonic() - self._last_save > 60 * minutes))
        flags = self._rank_tensor([float(save), float(stop)])
        if self.dist.world > 1:
            dist.broadcast(flags, src=0)
        return bool(flags[0]), bool(flags[1])

    # -- the loop -----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum, frame):  # noqa: ARG001
            self._stop_signal = signum
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    # -- memory ------------------------------------------------------------------------------

    def activation_bytes_per_chunk(self) -> int:
        """Bytes that the forward pass of one training chunk keeps for the backward pass (generator
        at the highest bitrate, mel loss and both discriminator passes), measured on a copy of the
        generator so that no codebook statistic or random draw of the run changes."""
        generator = copy.deepcopy(self.generator).train()
        x = torch.zeros(1, 1, self.tc.segment_samples, device=self.device)
        saved: dict[int, int] = {}

        def keep(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            y_hat = generator(x, max(self.stage_choices))[0][..., :x.shape[-1]]
            self.mel_loss(y_hat, x)
            self.disc(y_hat), self.disc(x)
        return sum(saved.values())

    def check_memory(self, available_bytes: int | None = None) -> None:
        """On the CPU, refuse a batch whose training step would not fit in the memory available
        (``/proc/meminfo``'s MemAvailable, shared by the processes of this machine): the kernel
        would kill the process in its first step, without a word. A step's memory grows by 1.5-1.6
        times the activations the forward pass saves per chunk (measured with 2.6 s chunks: lrac-t1
        180 MB per chunk, baseline-t1 470 MB); 1.7 leaves a margin."""
        if self.device.type != "cpu":
            return
        available = _available_memory_bytes() if available_bytes is None else available_bytes
        if available is None:
            return
        available //= max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        per_chunk = 1.7 * self.activation_bytes_per_chunk()
        if per_chunk * self.batch_per_rank > available:
            fits = int(0.8 * available // per_chunk)
            seconds = self.tc.segment_samples / self.cfg.model.sample_rate
            raise ValueError(
                f"train.batch_size {self.tc.batch_size} of {seconds:.1f} s chunks needs about "
                f"{per_chunk * self.batch_per_rank / 2**30:.1f} GiB per process to train on the CPU, and "
                f"{available / 2**30:.1f} GiB is available: use --batch-size {max(fits, 1) * self.dist.world} "
                "or less" + ("" if fits else ", and shorter chunks (train.segment_samples)"))

    def fit(self, max_steps: int) -> dict[str, Any]:
        """Train until ``step == max_steps``, ``train.max_minutes`` of wall-clock time have passed
        (equal-time comparisons), or SIGTERM/SIGINT; then checkpoint and return.

        Validates every ``valid_every_steps`` and at the end; writes ``last.pt`` every
        ``checkpoint_every_steps`` / ``checkpoint_every_minutes`` and at the end."""
        from tqdm import tqdm

        tc = self.tc
        self._fit_start = time.monotonic()
        previous = self._install_signal_handlers()
        seg_seconds = tc.segment_samples / self.cfg.model.sample_rate
        bar = tqdm(total=max_steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, smoothing=0.1)
        sums: dict[str, float] = {}
        count, window_start, window_audio = 0, time.perf_counter(), 0.0
        last_valid: dict[str, float] = {}
        try:
            stop = False
            while self.step < max_steps and not stop:
                t0 = time.perf_counter()
                x, y = random_level(*self.data.next(), self.cfg.data.level_db)
                losses = self.train_step(x.to(self.device), y.to(self.device))
                self._after_step()
                audio_s = seg_seconds * tc.batch_size
                window_audio += audio_s
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                speed = audio_s / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix_str(f"mel {losses['mel']:.3f} "
                                    + (f"g {losses['g_loss']:.2f} " if "g_loss" in losses else "")
                                    + (f"d {losses['d_loss']:.3f} " if "d_loss" in losses else "")
                                    + f"{speed:.2f} audio-s/s")
                if self.step % tc.log_every_steps == 0 or self.step == max_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {"step": self.step, "time": time.time(),
                              **{k: v / count for k, v in sums.items()},
                              "lr": self.opt_g.param_groups[0]["lr"],
                              "audio_s_per_s": window_audio / max(elapsed, 1e-9),
                              "nonfinite_steps": self.nonfinite_steps,
                              "skipped_utterances": self.data.skipped_utterances}
                    self._log(record)
                    sums, count, window_start, window_audio = {}, 0, time.perf_counter(), 0.0
                if self.valid is not None and (self.step % tc.valid_every_steps == 0
                                               or self.step == max_steps):
                    last_valid = self.validate()
                    self._log({"step": self.step, "time": time.time(), **last_valid})
                    self._keep_best(last_valid["valid_mel"])
                    if self.dist.main:
                        bar.write(f"step {self.step}: " + ", ".join(
                            f"{k} {v:.4f}" for k, v in last_valid.items()))
                save, stop = self._save_and_stop_flags()
                if save or self.step == max_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            self.data.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return {"step": self.step, "nonfinite_steps": self.nonfinite_steps, **last_valid,
                "best": self.best[0] if self.best else None}


def save_gan_weights(checkpoint: str | Path, dest: str | Path, half: bool = False) -> None:
    """Keep what a later session needs to continue a GAN run: config, generator, discriminator,
    step (no optimiser state, about a third of the size; with ``half`` the weights are stored as
    float16, half that again). ``lrac-train --init-from DEST`` resumes."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    keep = {k: state[k] for k in ("format", "version", "config", "generator", "model_id",
                                  "weight_norm_folded", "step", "discriminator") if k in state}
    if half:
        for net in ("generator", "discriminator"):
            if net in keep:
                keep[net] = half_state_dict(keep[net])
    atomic_torch_save(keep, dest)


def average_generators(checkpoints: Sequence[str | Path], dest: str | Path, half: bool = False) -> None:
    """Write a model file whose generator is the mean of the generators of ``checkpoints`` (of one
    run, e.g. its ``best/`` files): at small batches and a high learning rate each step is noisy,
    and the mean of the last few had a lower mel distance than any one of them; at the end of a
    decayed schedule the last step was as good (docs/results.md, session 5). Only for FSQ
    quantisers: learnt codebooks of different steps do not correspond entry by entry. ``half``
    stores float16 weights, as the shipped models."""
    if not checkpoints:
        raise ValueError("no checkpoints to average")
    states = [torch.load(path, map_location="cpu", weights_only=False) for path in checkpoints]
    cfg = Config.from_dict(states[-1]["config"])
    if cfg.quantizer.kind != "fsq":
        raise ValueError(f"averaging needs a fixed quantiser grid (quantizer.kind fsq), not {cfg.quantizer.kind!r}")
    for path, state in zip(checkpoints, states):
        other = Config.from_dict(state["config"])
        if other.model != cfg.model or other.quantizer != cfg.quantizer:
            raise ValueError(f"{path}: another model than {checkpoints[-1]}; average checkpoints of one run")
    last = states[-1]["generator"]
    mean = {name: (sum(s["generator"][name].double() for s in states) / len(states)).to(t.dtype)
            if t.is_floating_point() else t for name, t in last.items()}
    codec = Codec(cfg)
    codec.generator.load_state_dict(mean)
    steps = [int(s.get("step", 0)) for s in states]
    codec.save(dest, extra={"step": max(steps), "averaged_steps": steps}, half=half)

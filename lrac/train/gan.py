"""One training iteration of an lrac codec (spec §3): generator step, then discriminator step.

One iteration, with ``x`` the input and ``y`` the target chunk ``[B, 1, T]``:

1. draw the bitrate (one per batch, the same on every rank) and run ``y_hat, commit = G(x, n_q)``;
2. run the discriminator on ``y_hat`` and ``y``; generator loss: the weighted reconstruction
   losses (``lrac/train/losses.py``), ``lambda_commit * commit``, and from ``train.warmup_steps``
   on ``lambda_adv * hinge_adv + lambda_feat * feature_matching``; update G;
3. discriminator hinge loss on the *same* ``y_hat`` (detached) and ``y``; update D.

Because D does not change between steps 2 and 3 and ``y_hat`` is the cached generator output (as
ESPnet's ``cache_generator_outputs``), the discriminator outputs of step 3 equal those of step 2.
We therefore run the discriminator forward once per iteration and back-propagate twice through that
graph: the generator loss only into G's parameters (through D's inputs), the discriminator loss
only into D's parameters. The result is the same computation as ESPnet's four discriminator
forwards and two full backward passes, at about 60 % of the discriminator cost.

Before ``train.warmup_steps`` the discriminator is neither run nor trained (reconstruction only,
a cheap start on a CPU).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from lrac.codec import Codec, _eval
from lrac.conceal import last_received
from lrac.config import Config
from lrac.models.discriminators import MultiScaleSTFTDiscriminator
from lrac.packets import erasure_mask
from lrac.train.distributed import DistInfo, all_reduce_, average_gradients, rank_tensor
from lrac.train.losses import (RECONSTRUCTION_LOSSES, MultiScaleMelLoss, ReconstructionLoss,
                               discriminator_adversarial_loss, feature_matching_loss,
                               generator_adversarial_loss)

ADAM_BETAS = (0.9, 0.999)   # RAdam settings of the baseline recipe (spec §3)
ADAM_EPS = 1e-9
CONCEAL_WINDOW_FRAMES = 16   # what the concealment discriminator sees: 160 ms ...
CONCEAL_LEAD_FRAMES = 4      # ... from 40 ms before the start of a chunk's longest loss


class GanStep:
    """The networks, losses and optimisers of a run, and one iteration on a batch.

    Args:
        cfg: the whole config (``train`` for the losses and optimisers, ``model``/``quantizer``
            for the codec).
        dist_info: rank and world size (DDP wraps the generator when there are several).
        device: ``"cpu"`` or a CUDA device.

    The generator's initial weights come from torch's global generator: seed it first, the same
    on every rank.
    """

    def __init__(self, cfg: Config, dist_info: DistInfo | None = None, device: str | torch.device = "cpu") -> None:
        self.cfg, self.tc = cfg, cfg.train
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls, as cuDNN convs already use
        self.codec = Codec(cfg)
        self.generator = self.codec.generator.to(self.device).train()
        self.stage_choices = [self.codec.stages_for_bitrate(b) for b in self.codec.bitrates_bps]
        self.disc = MultiScaleSTFTDiscriminator(self.tc.disc_n_ffts, self.tc.disc_filters).to(self.device)
        sr = cfg.model.sample_rate
        self.losses = ReconstructionLoss({name: getattr(self.tc, f"lambda_{name}") for name in RECONSTRUCTION_LOSSES},
                                         sr).to(self.device)
        self.losses.check_segment(self.tc.segment_samples)
        if not (0 <= self.tc.erasure_prob <= 1 and 0 <= self.tc.erasure_rate < 1
                and self.tc.erasure_burst >= 1 and self.tc.erasure_packet_frames >= 1):
            raise ValueError("train.erasure_prob must be 0-1, train.erasure_rate 0 to below 1, "
                             "train.erasure_burst >= 1 and train.erasure_packet_frames >= 1")
        if self.tc.lambda_conceal_adv < 0 or self.tc.erasure_recon_weight < 0 or self.tc.disc_lr < 0:
            raise ValueError("train.lambda_conceal_adv, train.erasure_recon_weight and train.disc_lr "
                             "must be >= 0")
        if self.tc.lambda_conceal_adv > 0 and self.dist.world > 1:
            # each rank erases other chunks: a rank without any would skip the discriminator's
            # gradient all-reduce that the others wait in
            raise ValueError("train.lambda_conceal_adv > 0 trains on one process only")
        self.valid_mel = MultiScaleMelLoss(sr).to(self.device)   # the validation score, unweighted
        self.g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in self.disc.parameters() if p.requires_grad]
        self.opt_g = self._optimizer(self.g_params)
        self.opt_d = self._optimizer(self.d_params, self.tc.disc_lr or self.tc.lr)
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, self.tc.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, self.tc.lr_gamma)
        self.nonfinite_steps = 0
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

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast of the networks' matrix products when ``train.bf16`` (else a no-op):
        about 1.5x faster on CPUs with AVX512-BF16 (docs/training.md); the FFTs, FSQ and losses
        stay in float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.tc.bf16)

    def _optimizer(self, params: list[nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.RAdam(params, lr=lr or self.tc.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the networks and optimisers."""
        return {"generator": self.generator.state_dict(), "discriminator": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(_with_new_parameters(state["opt_g"], len(self.g_params)))
        for key in ("opt_d", "sched_g", "sched_d"):
            getattr(self, key).load_state_dict(state[key])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))

    # -- learning rate ----------------------------------------------------------------------------

    def after_step(self, step: int) -> None:
        """Decay the learning rates when ``step`` (the steps done) completes a decay period."""
        since = step - self.tc.lr_decay_from_step
        if since > 0 and since % self.tc.lr_gamma_every_steps == 0:  # ESPnet: one "epoch" = 10k iterations
            self.set_learning_rates(step)

    def set_learning_rates(self, step: int) -> None:
        """``lr * lr_gamma ** n`` with ``n`` the decays since ``lr_decay_from_step``, on both
        optimisers (set here rather than by ``sched.step()``, which warns while D is unused); ``lr``
        is this run's setting, so a resumed run takes a changed schedule (a new ``lr`` or
        ``lr_decay_from_step``) at once."""
        decays = max(step - self.tc.lr_decay_from_step, 0) // self.tc.lr_gamma_every_steps
        for sched in (self.sched_g, self.sched_d):
            sched.last_epoch = decays
            lr = self.tc.disc_lr if sched is self.sched_d and self.tc.disc_lr > 0 else self.tc.lr
            sched.base_lrs = [lr] * len(sched.optimizer.param_groups)
            for group in sched.optimizer.param_groups:
                group["lr"] = lr * self.tc.lr_gamma ** decays

    # -- one iteration ----------------------------------------------------------------------------

    def stages_at(self, step: int) -> int:
        """RVQ stages for ``step``: a draw from ``stage_choices`` seeded by (seed, step), equal on all ranks."""
        rng = np.random.default_rng([self.tc.seed, step, 5])
        uniform = np.full(len(self.stage_choices), 1.0 / len(self.stage_choices))
        return int(self.stage_choices[int(rng.choice(len(self.stage_choices), p=uniform))])

    def erasures_at(self, step: int, batch: int, n_frames: int) -> torch.Tensor | None:
        """Frames ``[batch, n_frames]`` (bool) to erase as lost packets at ``step`` (``train.erasure_*``;
        drawn from (seed, step, rank), so a resumed run erases the same ones), or None."""
        tc = self.tc
        if tc.erasure_prob <= 0:
            return None
        rng = np.random.default_rng([tc.seed, step, self.dist.rank, 11])
        mask = erasure_mask(batch, n_frames, tc.erasure_prob, 100 * tc.erasure_rate, tc.erasure_burst,
                            tc.erasure_packet_frames, rng)
        return None if mask is None else torch.from_numpy(mask).to(self.device)

    def _finite_everywhere(self, value: torch.Tensor) -> bool:
        flag = rank_tensor([0.0 if bool(torch.isfinite(value)) else 1.0], self.device, self.dist.world)
        return all_reduce_(flag, self.dist.world).item() == 0

    @staticmethod
    def _gradients_finite(params: list[nn.Parameter]) -> bool:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        return bool(torch.isfinite(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    def _skip(self, what: str, step: int) -> None:
        self.nonfinite_steps += 1
        warnings.warn(f"step {step + 1}: non-finite {what}, update skipped "
                      f"({self.nonfinite_steps} skipped so far)", stacklevel=3)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        """Iteration ``step`` (0-based: the steps done before it) on input ``x`` and target ``y``
        (``[B, 1, T]``); returns the losses. A non-finite loss or gradient skips its update with a
        warning that names the step as the log does (``step + 1``, the steps done after it)."""
        tc = self.tc
        n_q = self.stages_at(step)
        lost = self.erasures_at(step, x.shape[0], x.shape[-1] // self.codec.hop_length)
        with self.autocast():
            y_hat, commit = self.g_model(x, n_q, lost)
        y_hat = y_hat[..., :y.shape[-1]].float()
        erased = None if lost is None else lost.any(-1)          # [B]: the chunks that lost packets
        reconstruction, values = self._reconstruction(y_hat, y, erased)
        g_loss = reconstruction + tc.lambda_commit * commit
        out = {"n_q": float(n_q), **{k: v.item() for k, v in values.items()}, "commit": commit.item()}
        use_disc = step >= tc.warmup_steps
        weight = 1.0
        if use_disc:
            fake_audio, real_audio = y_hat, y
        elif tc.lambda_conceal_adv > 0 and erased is not None and bool(erased.any()):
            fake_audio, real_audio = self._concealment_windows(x, y_hat, lost, n_q)
            use_disc, weight = True, tc.lambda_conceal_adv
        if use_disc:
            # cached(): each weight-normed D weight is computed once for both forwards.
            with parametrize.cached(), self.autocast():
                fake, real = self.disc(fake_audio), self.disc(real_audio)
            adv = generator_adversarial_loss(fake)
            fm = feature_matching_loss(fake, real)
            g_loss = g_loss + weight * (tc.lambda_adv * adv + tc.lambda_feat * fm)
            out.update(adv=adv.item(), fm=fm.item())
        out["g_loss"] = g_loss.item()

        if not self._finite_everywhere(g_loss):
            self._skip("generator loss", step)
            return out
        self.opt_g.zero_grad(set_to_none=True)
        # Only into G: D's weight gradients are not needed for the generator update.
        g_loss.backward(inputs=self.g_params, retain_graph=use_disc)
        if self._gradients_finite(self.g_params):
            self.opt_g.step()
        else:
            self._skip("generator gradients", step)
        if use_disc:
            self._update_disc(real, fake, out, step)
        return out

    def _reconstruction(self, y_hat: torch.Tensor, y: torch.Tensor, erased: torch.Tensor | None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reconstruction losses of ``y_hat`` against ``y`` (``[B, 1, T]``), the chunks flagged in
        ``erased`` (``[B]`` bool) weighted ``train.erasure_recon_weight``; the values reported are
        the unweighted means over all chunks."""
        w = self.tc.erasure_recon_weight
        if erased is None or w == 1 or not bool(erased.any()):
            return self.losses(y_hat, y)
        if bool(erased.all()):
            total, values = self.losses(y_hat, y)
            return w * total, values
        parts = [(self.losses(y_hat[m], y[m]), int(m.sum()), share)
                 for m, share in ((~erased, 1.0), (erased, w))]
        n = y.shape[0]
        total = sum(share * count / n * part[0] for part, count, share in parts)
        values = {k: sum(count / n * part[1][k] for part, count, _ in parts) for k in parts[0][0][1]}
        return total, values

    def _concealment_windows(self, x: torch.Tensor, y_hat: torch.Tensor, lost: torch.Tensor, n_q: int
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the concealment discriminator compares, ``(fake, real)`` ``[E, 1, W]``: for each of
        the E erased chunks, the decode ``y_hat`` with its losses and the lossless decode of the same
        input ``x``, in a window of :data:`CONCEAL_WINDOW_FRAMES` from :data:`CONCEAL_LEAD_FRAMES`
        before the start of its longest run of lost frames (``lost [B, F]``; the earliest of equals).
        The longest, not the first: in bursty chunks the first loss is often a single packet, and
        long bursts are where concealment fails audibly."""
        hop = self.codec.hop_length
        chunks = lost.any(-1).nonzero().squeeze(-1)
        frames = min(CONCEAL_WINDOW_FRAMES, lost.shape[-1])
        run_start = _longest_run_starts(lost[chunks])               # [E] frame indices
        starts = (run_start - CONCEAL_LEAD_FRAMES).clamp(0, lost.shape[-1] - frames) * hop
        # in eval mode, as the model decodes (a baseline VQ's codebooks do not learn twice)
        with _eval(self.generator), torch.no_grad(), self.autocast():
            lossless = self.generator(x[chunks], n_q)[0][..., :y_hat.shape[-1]].float()
        at = starts[:, None] + torch.arange(frames * hop, device=x.device)       # [E, W]
        fake = y_hat[chunks, 0].gather(-1, at)
        # just before the run (less the decoder's one frame of look-ahead) fake and real differ
        # at most by the tail of an earlier loss: no adversarial gradient there, which would only
        # be noise to the decode of received frames
        before = at < ((run_start - 1).clamp(min=0) * hop)[:, None]
        fake = torch.where(before, fake.detach(), fake)[:, None]
        real = lossless[:, 0].gather(-1, at)[:, None]
        return fake, real

    def _update_disc(self, real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]],
                     out: dict[str, float], step: int) -> None:
        """Hinge-loss step of D on its outputs for ``real`` and ``fake`` audio; losses into ``out``."""
        real_loss, fake_loss = discriminator_adversarial_loss(real, fake)
        d_loss = real_loss + fake_loss
        out.update(d_loss=d_loss.item(), d_real=real_loss.item(), d_fake=fake_loss.item())
        if not self._finite_everywhere(d_loss):
            self._skip("discriminator loss", step)
            return
        self.opt_d.zero_grad(set_to_none=True)
        # Only into D: equivalent to using y_hat.detach() (the generator was updated already).
        d_loss.backward(inputs=self.d_params)
        average_gradients(self.d_params, self.dist.world)
        if self._gradients_finite(self.d_params):
            self.opt_d.step()
        else:
            self._skip("discriminator gradients", step)

    # -- validation -------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, valid: tuple[torch.Tensor, torch.Tensor], batch: int) -> dict[str, float]:
        """Mel loss (unweighted) on the validation chunks ``(input, target)`` ``[N, 1, T]`` at every
        bitrate, and their mean ``valid_mel``. The chunks are shared out across ranks, ``batch`` at
        a time, and the sums all-reduced."""
        x_all, y_all = valid
        idx = list(range(self.dist.rank, len(x_all), self.dist.world))
        self.generator.eval()
        results = {}
        try:
            for bitrate, n_q in zip(self.codec.bitrates_bps, self.stage_choices):
                total = rank_tensor([0.0, 0.0], self.device, self.dist.world, torch.float64)
                for start in range(0, len(idx), batch):
                    sel = idx[start:start + batch]
                    x, y = x_all[sel].to(self.device), y_all[sel].to(self.device)
                    y_hat = self.generator(x, n_q)[0]
                    total[0] += self.valid_mel(y_hat[..., :y.shape[-1]], y).item() * len(sel)
                    total[1] += len(sel)
                all_reduce_(total, self.dist.world)
                results[f"valid_mel_{bitrate // 1000}kbps"] = float(total[0] / max(total[1], 1))
        finally:
            self.generator.train()
        results["valid_mel"] = float(np.mean(list(results.values())))
        return results

    # -- memory -----------------------------------------------------------------------------------

    def activation_bytes_per_chunk(self) -> int:
        """Bytes that the forward pass of one training chunk keeps for the backward pass (generator
        at the highest bitrate, reconstruction losses and both discriminator passes), measured on a
        copy of the generator so that no codebook statistic or random draw of the run changes."""
        generator = copy.deepcopy(self.generator).train()
        x = torch.zeros(1, 1, self.tc.segment_samples, device=self.device)
        saved: dict[int, int] = {}

        def keep(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            y_hat = generator(x, max(self.stage_choices))[0][..., :x.shape[-1]]
            self.losses(y_hat, x)
            self.disc(y_hat), self.disc(x)
        return sum(saved.values())


def _with_new_parameters(opt_state: dict[str, Any], n_params: int) -> dict[str, Any]:
    """An optimiser state saved before the generator's last parameters existed (the decoder's missing
    latent), extended to ``n_params``: the new ones start without moments, as in a fresh optimiser."""
    group = opt_state["param_groups"][-1]
    have = sum(len(g["params"]) for g in opt_state["param_groups"])
    if have < n_params:
        start = max(group["params"], default=-1) + 1
        group = {**group, "params": list(group["params"]) + list(range(start, start + n_params - have))}
        opt_state = {**opt_state, "param_groups": opt_state["param_groups"][:-1] + [group]}
    return opt_state


def _longest_run_starts(lost: torch.Tensor) -> torch.Tensor:
    """The first frame of each row's longest run of True in ``lost`` ``[E, F]`` (the earliest of
    equal runs) ``[E]``; every row has at least one True."""
    frames = torch.arange(lost.shape[-1], device=lost.device)
    run = frames - last_received(lost)                # frames lost in a row up to each (received: 0)
    end = run.argmax(-1)                                              # first maximum: earliest run
    return end - run.gather(-1, end[:, None]).squeeze(-1) + 1

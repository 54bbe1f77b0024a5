"""The training loop: batches in, :class:`~lrac.train.gan.GanStep` iterations, validation, logs,
checkpoints, and a clean stop on a step limit, a time budget or a signal.

A run's folder holds ``last.pt`` (written before the first step, every ``checkpoint_every_steps``
/ ``checkpoint_every_minutes`` and at the end), ``best/`` and ``best.pt`` (``lrac/train/checkpoint.py``),
``train.jsonl`` (one strict-JSON record per log interval and per validation; a non-finite value is
``null``) and, when installed, TensorBoard logs. SIGTERM or SIGINT ends the current step, writes
``last.pt`` and returns with ``stopped_by`` naming the signal (``lrac-train`` then exits 143 / 130).
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from lrac.config import Config
from lrac.train.augment import check_level_range, random_level
from lrac.train.checkpoint import (LAST, BestCheckpoints, chunks_digest, load_start_weights, read_checkpoint,
                                   remove_stale_temp_files, write_checkpoint)
from lrac.train.data import ChunkStream, make_prefetcher
from lrac.train.distributed import DistInfo, broadcast_, gather, rank_tensor
from lrac.train.gan import GanStep


def strict_json(record: dict[str, Any]) -> str:
    """One JSON line; non-finite floats (NaN, inf) become ``null``, which every JSON reader takes."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return json.dumps(clean, allow_nan=False)


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
        workers: data worker processes per rank (0: one background thread).
    """

    def __init__(self, cfg: Config, out_dir: str | Path, stream: ChunkStream,
                 valid: tuple[torch.Tensor, torch.Tensor] | None = None,
                 dist_info: DistInfo | None = None, device: str | torch.device = "cpu",
                 progress: bool = True, workers: int = 0) -> None:
        self.cfg, self.tc = cfg, cfg.train
        self.out_dir = Path(out_dir)
        self.dist = dist_info or DistInfo()
        self.progress = progress and self.dist.main
        if self.tc.batch_size % self.dist.world:
            raise ValueError(f"train.batch_size={self.tc.batch_size} is not divisible by the "
                             f"{self.dist.world} processes")
        if workers < 0:
            raise ValueError(f"the number of data workers must be >= 0, got {workers}")
        check_level_range(cfg.data.level_db)
        self.batch_per_rank = self.tc.batch_size // self.dist.world
        if self.dist.main:
            remove_stale_temp_files(self.out_dir)   # of a run killed while writing
        torch.manual_seed(self.tc.seed)  # identical initial weights on every rank
        self.gan = GanStep(cfg, self.dist, device)
        self.stream, self.workers = stream, workers
        self.data = make_prefetcher(stream, self.batch_per_rank, workers)
        self.valid = valid
        self.valid_digest = chunks_digest(valid)   # kept in checkpoints: a resume checks it
        self.step = 0
        self.best = BestCheckpoints(self.out_dir, self.tc.keep_best)
        self._stop_signal: int | None = None
        self._last_save = time.monotonic()
        self._jsonl = None
        self._tb = None

    # -- starting points ------------------------------------------------------------------------

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue exactly from a ``last.pt`` (same model config and process count). Warns when
        this run's validation chunks are not the ones the checkpoint's run validated on: its
        figures would not continue the log's, nor compare with its best checkpoints."""
        state = read_checkpoint(path, self.cfg, self.dist.world)
        saved = state.get("valid_digest")
        if saved and self.valid_digest and saved != self.valid_digest and self.dist.main:
            warnings.warn(f"{path}: the validation chunks differ from those the run validated on up to "
                          f"step {int(state['step'])} (another validation set, or other audio for it): "
                          "validation figures from here on do not compare with the earlier ones, nor "
                          "with its best checkpoints", stacklevel=2)
        self.gan.load_state_dict(state)
        self.step = int(state["step"])
        self.gan.set_learning_rates(self.step)   # the schedule of this run's config (it may restart it)
        self.best.entries = list(state.get("best", []))
        mine = state["ranks"][self.dist.rank]
        self.data.close()
        self.data = make_prefetcher(self.stream, self.batch_per_rank, self.workers, mine["data"])
        torch.set_rng_state(mine["torch_rng"])

    def load_weights(self, path: str | Path) -> list[str]:
        """Start from the generator (and discriminator, when present) weights of ``path``: a model
        file, a continuation file or a checkpoint. Optimisers start afresh; the step count
        continues, so warm-up and learning-rate decay pick up where the run was. Returns how this
        run's model differs from the file's (:func:`lrac.train.checkpoint.load_start_weights`)."""
        self.step, changes = load_start_weights(path, self.gan.generator, self.gan.disc, self.cfg)
        self.gan.set_learning_rates(self.step)  # the learning rate the run had reached
        return changes

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically. Every rank must call it (it gathers each
        rank's data position and RNG state); only the main rank writes."""
        path = Path(path) if path else self.out_dir / LAST
        ranks = gather({"data": self.data.state_dict(), "torch_rng": torch.get_rng_state()}, self.dist.world)
        if self.dist.main:
            write_checkpoint(path, self.gan.codec, self.cfg, self.step, self.gan.state_dict(),
                             self.best.entries, ranks, self.valid_digest)
        self._last_save = time.monotonic()
        return path

    # -- logging --------------------------------------------------------------------------------

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
        self._jsonl.write(strict_json(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["step"])

    def _close_logs(self) -> None:
        for log in (self._jsonl, self._tb):
            if log is not None:
                log.close()
        self._jsonl = self._tb = None

    # -- stopping -------------------------------------------------------------------------------

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

    def _save_and_stop_flags(self, fit_start: float) -> tuple[bool, str | None]:
        """``(save now, why stop now or None)`` as rank 0 sees them (the step/time interval, the
        time budget, a signal), broadcast so that every rank takes the same branch."""
        minutes, budget = self.tc.checkpoint_every_minutes, self.tc.max_minutes
        stop = 0.0
        if self._stop_signal is not None:
            stop = float(self._stop_signal)
        elif budget > 0 and time.monotonic() - fit_start > 60 * budget:
            stop = -1.0
        save = (stop or self.step % self.tc.checkpoint_every_steps == 0
                or (minutes > 0 and time.monotonic() - self._last_save > 60 * minutes))
        flags = broadcast_(rank_tensor([float(save), stop], self.gan.device, self.dist.world), self.dist.world)
        why = None if not flags[1] else "max_minutes" if flags[1] < 0 else signal.Signals(int(flags[1])).name
        return bool(flags[0]), why

    # -- the loop -------------------------------------------------------------------------------

    def fit(self, max_steps: int, report: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train until ``step == max_steps``, ``train.max_minutes`` of wall-clock time have passed,
        or SIGTERM/SIGINT; then checkpoint and return. ``report`` gets a line per validation.

        Writes ``last.pt`` before the first step when there is none (a run killed early then still
        resumes), every ``checkpoint_every_steps`` / ``checkpoint_every_minutes`` and at the end;
        validates every ``valid_every_steps`` and at the end. Returns ``step``, ``nonfinite_steps``,
        the last validation, ``best`` and ``stopped_by`` (``"max_steps"``, ``"max_minutes"``,
        ``"SIGTERM"`` or ``"SIGINT"``)."""
        from tqdm import tqdm

        tc = self.tc
        fit_start = time.monotonic()
        self._stop_signal = None
        previous = self._install_signal_handlers()
        no_checkpoint = self._rank_flag(not (self.out_dir / LAST).is_file())
        seg_seconds = tc.segment_samples / self.cfg.model.sample_rate
        bar = tqdm(total=max_steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, smoothing=0.1)
        sums: dict[str, float] = {}
        count, window_start, window_audio = 0, time.perf_counter(), 0.0
        last_valid: dict[str, float] = {}
        stopped_by = "max_steps"
        try:
            if no_checkpoint:
                self.save_checkpoint()
            while self.step < max_steps:
                t0 = time.perf_counter()
                x, y = random_level(*self.data.next(), self.cfg.data.level_db)
                losses = self.gan.train_step(x.to(self.gan.device), y.to(self.gan.device), self.step)
                self.step += 1
                self.gan.after_step(self.step)
                audio_s = seg_seconds * tc.batch_size
                window_audio += audio_s
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                speed = audio_s / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix_str(" ".join(f"{k} {losses[k]:.3f}" for k in ("mel", "g_loss", "d_loss")
                                             if k in losses) + f" {speed:.2f} audio-s/s")
                if self.step % tc.log_every_steps == 0 or self.step == max_steps:
                    elapsed = time.perf_counter() - window_start
                    self._log({"step": self.step, "time": time.time(),
                               **{k: v / count for k, v in sums.items()},
                               "lr": self.gan.opt_g.param_groups[0]["lr"],
                               "audio_s_per_s": window_audio / max(elapsed, 1e-9),
                               "nonfinite_steps": self.gan.nonfinite_steps,
                               "skipped_utterances": self.data.skipped_utterances})
                    sums, count, window_start, window_audio = {}, 0, time.perf_counter(), 0.0
                if self.valid is not None and (self.step % tc.valid_every_steps == 0
                                               or self.step == max_steps):
                    last_valid = self.gan.validate(self.valid, self.batch_per_rank)
                    self._log({"step": self.step, "time": time.time(), **last_valid})
                    if self.dist.main:
                        self.best.offer(self.gan.codec, last_valid["valid_mel"], self.step)
                        if report:
                            report(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_valid.items()))
                save, why = self._save_and_stop_flags(fit_start)
                if save or self.step == max_steps:
                    self.save_checkpoint()
                if why:
                    stopped_by = why
                    break
        finally:
            bar.close()
            self.data.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close_logs()
        return {"step": self.step, "nonfinite_steps": self.gan.nonfinite_steps, **last_valid,
                "best": self.best.entries[0] if self.best.entries else None, "stopped_by": stopped_by}

    def _rank_flag(self, value: bool) -> bool:
        """Rank 0's ``value`` on every rank."""
        return bool(broadcast_(rank_tensor([float(value)], self.gan.device, self.dist.world), self.dist.world)[0])

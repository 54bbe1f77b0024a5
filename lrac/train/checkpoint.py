"""The files of a training run: checkpoints to resume, weights to start from, best-k, averages, exports.

* ``OUT/last.pt`` (:func:`write_checkpoint`): a model file (:meth:`lrac.Codec.load` reads it) plus
  everything needed to continue exactly: the run's whole config, discriminator, optimisers,
  schedulers, step, best-k list, and each rank's data position and RNG state.
* ``OUT/best/*.pt`` and ``OUT/best.pt`` (:class:`BestCheckpoints`): the model files of the
  ``train.keep_best`` lowest validation mel losses, and the best of them.
* a continuation file (:func:`save_gan_weights`): generator + discriminator + step of a
  checkpoint, which ``lrac-train --init-from`` starts from (:func:`load_start_weights`; a smaller
  frame model's weights grow into a larger one: ``lrac/train/grow.py``).
* :func:`average_generators`: the mean of several checkpoints' generators; :func:`export_model`:
  a shipped model file (float16, with a note).

Every write is atomic (a temporary file in the same folder, then a rename); a run removes the
temporary files a killed run left behind when it starts (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lrac.codec import Codec, atomic_torch_save, half_state_dict, model_identity
from lrac.config import Config
from lrac.train.grow import grow_generator

CHECKPOINT_FORMAT = "lrac-train-checkpoint"
LAST = "last.pt"


def remove_stale_temp_files(out_dir: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes in a run folder (``.*.tmp`` in
    ``out_dir`` and ``out_dir/best``); returns what went. Only one run may use a folder at a time."""
    out_dir = Path(out_dir)
    gone = []
    for folder in (out_dir, out_dir / "best"):
        for path in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def write_checkpoint(path: str | Path, codec: Codec, cfg: Config, step: int, networks: dict[str, Any],
                     best: list[dict[str, Any]], ranks: list[dict[str, Any]],
                     valid_digest: str | None = None) -> None:
    """Write ``last.pt``: the codec as a model file, plus the run's config ``cfg``, ``networks``
    (:meth:`lrac.train.gan.GanStep.state_dict`, whose generator the model file already holds),
    the ``step``, the ``best`` list, every rank's data position and RNG state (``ranks``) and what
    identifies the validation chunks (``valid_digest``, :func:`chunks_digest`)."""
    extra = {key: value for key, value in networks.items() if key != "generator"}
    codec.save(path, extra={"format_train": CHECKPOINT_FORMAT, "run_config": cfg.to_dict(), "step": step,
                            "best": best, "world": len(ranks), "ranks": ranks, "valid_digest": valid_digest,
                            **extra})


def chunks_digest(chunks: tuple[torch.Tensor, ...] | None) -> str | None:
    """A digest of validation chunks ``(input, target)`` (each ``[N, 1, T]``), None for none."""
    if chunks is None:
        return None
    digest = hashlib.sha1()
    for tensor in chunks:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: str | Path, cfg: Config, world: int) -> dict[str, Any]:
    """A :func:`write_checkpoint` file, checked against this run (same model and process count)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format_train") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an lrac-train checkpoint (a model file cannot be resumed)")
    saved = run_config_of(state)
    if saved.model != cfg.model or saved.quantizer != cfg.quantizer:
        raise ValueError(f"{path}: the checkpoint's model/quantizer config differs from this run's; "
                         "resume with the config it was trained with")
    if state["world"] != world:
        raise ValueError(f"{path}: saved by {state['world']} process(es), resumed with {world}; "
                         "resume with the same --nproc_per_node")
    return state


def run_config_of(state: dict[str, Any]) -> Config:
    """The config a checkpoint or model file was trained with: the whole run config where the file
    has it (checkpoints), else the model's config with the default training settings."""
    return Config.from_dict(state.get("run_config", state["config"]))


def load_start_weights(path: str | Path, generator: nn.Module, disc: nn.Module, cfg: Config
                       ) -> tuple[int, list[str]]:
    """Load the generator (and discriminator, when present) weights of ``path`` (a model file, a
    :func:`save_gan_weights` file or a checkpoint) into a run of config ``cfg``. Returns the file's
    step and what differs from the file's model (the model config's changes, what grew).

    The run's model config may differ from the file's where the weights still fit, or where it
    grows the file's frame backbones (more blocks, look-ahead or hidden units: :mod:`lrac.train.grow`,
    new weights inert). Weights that do not fit are refused, naming the differences."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "generator" not in state:
        raise ValueError(f"{path}: no generator weights inside")
    if state.get("weight_norm_folded"):
        raise ValueError(f"{path}: weight norm was folded (an inference export); "
                         "start from a training checkpoint or save_gan_weights file")
    saved = Config.from_dict(state["config"])
    changes = saved.model_changes(cfg)
    unfit = f"{path}: its weights do not fit this run's model (the config differs: "
    grown: list[str] = []
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError as exc:
        try:   # a larger frame model than the file's: grow the file's weights into it
            grown = grow_generator(generator, state["generator"], saved.model, cfg.model)
        except ValueError as why:
            raise ValueError(f"{unfit}{'; '.join([*changes, str(why)])})") from exc
    try:
        if "discriminator" in state:
            disc.load_state_dict(state["discriminator"])
    except RuntimeError as exc:
        raise ValueError(f"{unfit}the discriminator)") from exc
    return int(state.get("step", 0)), changes + [f"grown {line}" for line in grown]


class BestCheckpoints:
    """The model files of the ``keep`` lowest validation losses in ``out_dir/best/``, and the best
    of them copied to ``out_dir/best.pt``. ``entries`` (``{"loss", "step", "path"}``, best first)
    is what a checkpoint saves."""

    def __init__(self, out_dir: str | Path, keep: int) -> None:
        self.out_dir, self.keep = Path(out_dir), keep
        self.entries: list[dict[str, Any]] = []

    def offer(self, codec: Codec, loss: float, step: int) -> None:
        """Save ``codec`` if ``loss`` belongs among the best; drop the one that falls out."""
        if self.keep <= 0 or (len(self.entries) >= self.keep and loss >= self.entries[-1]["loss"]):
            return
        path = self.out_dir / "best" / f"step{step:09d}.pt"
        codec.save(path, extra={"step": step, "valid_mel": loss})
        self.entries.append({"loss": loss, "step": step, "path": str(path)})
        self.entries.sort(key=lambda b: b["loss"])
        for dropped in self.entries[self.keep:]:
            Path(dropped["path"]).unlink(missing_ok=True)
        self.entries = self.entries[: self.keep]
        if self.entries[0]["step"] == step:
            tmp = self.out_dir / ".best.pt.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, self.out_dir / "best.pt")


def save_gan_weights(checkpoint: str | Path, dest: str | Path, half: bool = False) -> None:
    """Keep what a later run needs to continue a GAN run: the model's and the run's config,
    generator, discriminator, step (no optimiser state, about a third of the size; with ``half``
    the weights are stored as float16, half that again). ``lrac-train --init-from DEST`` continues."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    keep = {k: state[k] for k in ("format", "version", "config", "run_config", "generator", "model_id",
                                  "weight_norm_folded", "step", "discriminator") if k in state}
    if half:
        for net in ("generator", "discriminator"):
            if net in keep:
                keep[net] = half_state_dict(keep[net])
        if "model_id" in keep:   # the float32 weights' id no longer fits: Codec.load would refuse it
            keep["model_id"] = model_identity(keep["config"], keep["generator"]).hex()
    atomic_torch_save(keep, dest)


def average_generators(checkpoints: Sequence[str | Path], dest: str | Path, half: bool = False) -> None:
    """Write a model file whose generator is the mean of the generators of ``checkpoints`` (of one
    run, e.g. its ``best/`` files): at small batches and a high learning rate each step is noisy,
    and the mean of the last few had a lower mel distance than any one of them; at the end of a
    decayed schedule the last step was as good (docs/results.md). Only for FSQ quantisers: learnt
    codebooks of different steps do not correspond entry by entry. ``half`` stores float16
    weights, as the shipped models."""
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
    codec.made = f"the mean of the generators of steps {steps}"
    codec.save(dest, extra={"step": max(steps), "averaged_steps": steps}, half=half)


def export_model(source: str | Path, dest: str | Path, note: str, name: str | None = None,
                 rules: Sequence[str] = ()) -> Codec:
    """A model file to ship from a checkpoint or model file: the generator only, in float16, with
    ``note`` (what users should know about these weights) and, when given, the model's ``name``.
    ``rules``: config overrides (``KEY=VALUE``) of settings without weights, e.g. a coding rule
    that a "same weights" version changes. The float16 rounding happens here, so the file
    evaluated is the file that ships."""
    codec = Codec.load(source, inference=False)
    if rules:
        weights = codec.generator.state_dict()
        made = codec.made
        codec = Codec(codec.config.override(list(rules)))
        try:
            codec.generator.load_state_dict(weights)
        except RuntimeError:
            raise ValueError(f"{', '.join(rules)}: changes the model's weights; a same-weights version "
                             "can change only settings without weights") from None
        codec.made = made
    state = torch.load(source, map_location="cpu", weights_only=False)
    codec.note = note
    if name:
        codec.config.name = name
    step = state.get("step")
    codec.made = codec.made or (f"{Path(source).name} at step {step}" if step is not None else Path(source).name)
    codec.save(dest, half=True)
    return codec

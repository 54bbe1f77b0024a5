"""Setting a training run up: its config, its data, and a check that its batch fits in memory.

``lrac-train`` is these steps in order: :func:`run_config`, :func:`data_sources`,
:func:`prepare_data` (the recipe's stages 1-3, cached), :func:`training_data` (the chunk stream and
the validation chunks), a :class:`~lrac.train.trainer.Trainer`, :func:`check_memory`, then its
``fit``. Messages go to a ``report`` callable (the command prints them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from lrac.config import Config, load_config
from lrac.train.augment import Augmenter
from lrac.train.data import (ChunkStream, Utterance, find_toolkit_layout, fixed_chunks, load_source,
                             pairs_from, prepared, run_stages)
from lrac.train.distributed import DistInfo
from lrac.train.gan import GanStep

Report = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# the config
# --------------------------------------------------------------------------------------------


def default_preset(track: int | None) -> str:
    """The preset of a new run: the shipped model of the track (``t1``, ``t2``)."""
    return f"t{track or 1}"


def run_config(preset: str | None, overrides: list[str], track: int | None = None,
               continue_from: str | Path | None = None, report: Report | None = None) -> Config:
    """The config of a run, ``overrides`` (``KEY=VALUE``) applied last and ``track`` (1, 2) as
    ``model.track``.

    A new run takes ``preset`` (default: :func:`default_preset`). A run that continues from a file
    takes the config the file was trained with: a checkpoint's or continuation file's whole run
    config (its recipe carries over), or for a plain model file its model with the training settings
    of ``preset``."""
    extra = list(overrides) + ([f"model.track={track}"] if track else [])
    if continue_from is None:
        return load_config(preset or default_preset(track), extra)
    path = Path(continue_from)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{path}: not an lrac model file or checkpoint (no config inside)")
    stored = state.get("run_config") or (state["config"] if "train" in state["config"] else None)
    if stored is not None:
        if preset and report:
            report(f"note: the config stored in {path} is used; --config {preset} is ignored")
        return Config.from_dict(stored).override(extra)
    base = load_config(preset or default_preset(track)).to_dict()
    return Config.from_dict({**base, **state["config"]}).override(extra)


# --------------------------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------------------------


@dataclass
class DataSources:
    """Where a run's audio is: a folder, a list file, or the LRAC toolkit's ``data/`` folder each
    (None: none). ``speech`` sets go through the recipe's stages 1-3, the others through stage 1."""

    train: str
    valid: str | None = None
    noise: str | None = None
    rir: str | None = None
    valid_noise: str | None = None
    valid_rir: str | None = None

    @property
    def speech(self) -> dict[str, str]:
        return {k: v for k, v in (("train", self.train), ("valid", self.valid)) if v}

    @property
    def augmentation(self) -> dict[str, str]:
        return {k: v for k, v in (("noise", self.noise), ("rir", self.rir), ("valid_noise", self.valid_noise),
                                  ("valid_rir", self.valid_rir)) if v}


def data_sources(train: str, valid: str | None = None, noise: str | None = None, rir: str | None = None,
                 valid_noise: str | None = None, valid_rir: str | None = None, track: int = 1,
                 report: Report | None = None) -> DataSources:
    """The run's sources: the options given, else what the toolkit layout of ``train`` has.
    Validation noise and RIRs default to the training ones. Track 1 trains on the speech as it is
    (spec §3.4): its noise and RIRs are dropped."""
    layout = find_toolkit_layout(train)

    def pick(given: str | None, found: Path | None) -> str | None:
        return given or (str(found) if found else None)

    noise = pick(noise, layout.noise if layout else None)
    rir = pick(rir, layout.rir if layout else None)
    sources = DataSources(train, pick(valid, layout.valid if layout else None), noise, rir,
                          pick(valid_noise, layout.noise_valid if layout else None) or noise,
                          pick(valid_rir, layout.rir_valid if layout else None) or rir)
    if track == 1 and sources.augmentation:
        if report and any((noise, rir, valid_noise, valid_rir)) and not layout:
            report("note: Track 1 trains on the speech as it is: --noise / --rir are not used")
        sources.noise = sources.rir = sources.valid_noise = sources.valid_rir = None
    return sources


def prepare_data(sources: DataSources, cache: str | Path, cfg: Config, stage: int = 1, stop_stage: int = 3,
                 report: Report = print, progress: Callable[[Iterable], Iterable] | None = None) -> None:
    """The recipe's stages ``stage..stop_stage`` (1 check, 2 format, 3 length filter) on every set,
    cached under ``cache`` (``lrac/train/data.py``)."""
    speech = sources.speech
    for name, spec in {**speech, **sources.augmentation}.items():
        run_stages(name, spec, cache, stage, min(stop_stage, 3), cfg.model.sample_rate, cfg.data.min_seconds,
                   cfg.data.max_seconds, speech=name in speech, report=report, progress=progress)


def _utterances(cache: Path, name: str, spec: str | None, report: Report | None) -> list[Utterance]:
    if not spec:
        return []
    utts = prepared(cache, name, spec)
    if utts is None:
        if report:
            report(f"note: no prepared list for {name} (run stages 1-3 to check, convert and "
                   "filter it); using the source as it is")
        utts = load_source(spec)
    return utts


def training_data(sources: DataSources, cache: str | Path, cfg: Config, dist_info: DistInfo | None = None,
                  augment_cache_mb: float = 2048.0, report: Report | None = None
                  ) -> tuple[ChunkStream, tuple[torch.Tensor, torch.Tensor] | None]:
    """This rank's chunk stream and the fixed validation chunks (None without a validation set),
    from the prepared lists under ``cache`` (or the sources as they are). Track 2 inputs get noise
    and reverb (:class:`~lrac.train.augment.Augmenter`); ``augment_cache_mb`` of memory keeps
    augmented utterances (``ChunkStream``). ``report`` (main rank) hears about what is missing."""
    dist_info = dist_info or DistInfo()
    cache, sr = Path(cache), cfg.model.sample_rate
    say = report if dist_info.main else None
    train = _utterances(cache, "train", sources.train, say)
    valid = _utterances(cache, "valid", sources.valid, say)
    paths = {name: [u.path for u in _utterances(cache, name, spec, say)]
             for name, spec in sources.augmentation.items()}
    if say and cfg.model.track == 2 and not paths.get("noise"):
        say("warning: Track 2 without --noise: inputs are only reverberant")
    if say and not valid:
        say("warning: no validation set (--valid): no validation loss and no best checkpoints")

    def augmenter(prefix: str) -> Augmenter | None:
        if cfg.model.track != 2:
            return None
        return Augmenter(cfg.data, paths.get(f"{prefix}noise", []), paths.get(f"{prefix}rir", []), sr,
                         seed=cfg.train.seed)

    stream = ChunkStream(train, cfg.train.segment_samples, pairs_from(augmenter("")), cfg.data.shuffle_chunks,
                         cfg.train.seed, dist_info.rank, dist_info.world, sr, cache_mb=augment_cache_mb)
    chunks = None
    if valid:
        chunks = fixed_chunks(valid, cfg.train.segment_samples, pairs_from(augmenter("valid_")),
                              cfg.train.valid_batches * cfg.train.batch_size, cfg.train.seed, sr)
    return stream, chunks


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def available_memory_bytes() -> int | None:
    """MemAvailable of ``/proc/meminfo`` in bytes (None where there is none: not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(gan: GanStep, batch_per_rank: int, world: int = 1, available_bytes: int | None = None) -> None:
    """On the CPU, refuse a batch whose training step would not fit in the memory available
    (``/proc/meminfo``'s MemAvailable, shared by the processes of this machine): the kernel
    would kill the process in its first step, without a word. A step's memory grows by 1.5-1.6
    times the activations the forward pass saves per chunk (measured with 2.6 s chunks: t1
    180 MB per chunk, baseline-t1 470 MB); 1.7 leaves a margin."""
    if gan.device.type != "cpu":
        return
    available = available_memory_bytes() if available_bytes is None else available_bytes
    if available is None:
        return
    available //= max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    per_chunk = 1.7 * gan.activation_bytes_per_chunk()
    if per_chunk * batch_per_rank > available:
        fits = int(0.8 * available // per_chunk)
        tc = gan.tc
        seconds = tc.segment_samples / gan.cfg.model.sample_rate
        raise ValueError(
            f"train.batch_size {tc.batch_size} of {seconds:.1f} s chunks needs about "
            f"{per_chunk * batch_per_rank / 2**30:.1f} GiB per process to train on the CPU, and "
            f"{available / 2**30:.1f} GiB is available: use --batch-size {max(fits, 1) * world} "
            "or less" + ("" if fits else ", and shorter chunks (train.segment_samples)"))


def describe(cfg: Config, train: ChunkStream, valid: Any, dist_info: DistInfo, device: str) -> str:
    """The line a run starts with."""
    n_valid = 0 if valid is None else len(valid[0])
    return (f"training Track {cfg.model.track} ({cfg.name}): {len(train.utts)} utterances, {n_valid} "
            f"validation chunks, batch {cfg.train.batch_size} x "
            f"{cfg.train.segment_samples / cfg.model.sample_rate:.2f} s on {dist_info.world} process(es), {device}")

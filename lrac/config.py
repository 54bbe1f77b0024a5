"""The one configuration of lrac: a tree of dataclasses, named presets, YAML, dotted overrides.

Every command and every saved model uses :class:`Config`. A model file stores the model's part
(:meth:`Config.model_dict`), so the file alone rebuilds its codec; a training checkpoint stores the
whole tree. Presets live in ``lrac/presets/<name>.yaml``: ``t1`` and ``t2`` are the shipped models,
``baseline-t1`` and ``baseline-t2`` the challenge's baselines.

This module imports nothing of lrac (arrows point down only).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
import types
import warnings
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be built: unknown key, wrong type, unknown preset."""


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


@dataclass
class SeanetEncoderConfig:
    """Causal SEANet encoder (spec §2.1): input conv, then per block residual units + strided conv.

    Per-block lists have one entry per block. ``res_kernels[b][u] = [k1, k2]`` and
    ``res_dilations[b][u] = [d1, d2]`` give the two convs of residual unit ``u`` of block ``b``.
    ``lookahead`` lists the convs that are *not* causal as ``[block, unit, conv]`` with conv 0 or 1;
    each adds ``((k - 1) * d) // 2`` samples of look-ahead at its layer's rate.
    """

    channels: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    strides: list[int] = field(default_factory=lambda: [3, 4, 4, 5])
    down_kernels: list[int] = field(default_factory=lambda: [6, 8, 8, 10])
    input_kernel: int = 7
    res_kernels: list[list[list[int]]] = field(default_factory=list)
    res_dilations: list[list[list[int]]] = field(default_factory=list)
    lookahead: list[list[int]] = field(default_factory=list)


@dataclass
class SeanetDecoderConfig:
    """Causal SEANet decoder: per block ELU -> transposed conv (kernel = stride) -> residual units;
    then ELU -> output conv -> Tanh. Lists are indexed like :class:`SeanetEncoderConfig`."""

    channels: list[int] = field(default_factory=lambda: [64, 32, 16, 8])
    strides: list[int] = field(default_factory=lambda: [5, 4, 3, 4])
    output_kernel: int = 21
    res_kernels: list[list[list[int]]] = field(default_factory=list)
    res_dilations: list[list[list[int]]] = field(default_factory=list)
    lookahead: list[list[int]] = field(default_factory=list)


@dataclass
class PitchConfig:
    """The pitch path of the frame family (``lrac/models/pitch.py``): the encoder tracks the pitch
    (causal YIN) and sends it as a code of ``bits`` bits every ``every_frames`` frames (64 levels per
    20 ms: 300 bit/s inside the first token of each frame, so the bitrates stay); with ``fine_bits``
    the second token (6 kbps) refines each frame's own pitch in that many bits and carries late
    voicing onsets. ``fine_levels``: the refinement's steps (``lrac.models.pitch.fine_octaves``),
    ``companded`` (15 cents near the code, up to 380 cents and an octave either way; t1 from version
    20) or ``uniform`` (16-cent steps, -128 to +112 cents; t2, model files before format 4). The decoder
    mixes a pulse train at that pitch, with a learnt phase per bin, into the iSTFT spectrum. The
    tracker's voicing rules are fixed in ``pitch.py``."""

    bits: int = 6
    every_frames: int = 2
    fine_bits: int = 4
    fine_levels: str = "companded"

    @property
    def symbol_bits(self) -> tuple[int, ...]:
        """Bits of the pitch symbols in each token row that carries some (row 0, then row 1)."""
        return (self.bits // self.every_frames,) + ((self.fine_bits,) if self.fine_bits else ())


@dataclass
class LowBandConfig:
    """The low band coded close to the waveform at the highest bitrate (``lrac/models/lowband.py``):
    the amplitude and phase of the first ``harmonics`` harmonics below 500 Hz, in the last
    ``(5 + 5 * harmonics) / 10`` token rows (3 harmonics: 20 bits, two tokens of each 10 ms frame);
    the neural latent keeps the other rows. Needs the pitch path. ``layout``: how a frame's bits
    split between level, amplitudes and phases (``lrac.models.lowband.LAYOUTS``): ``adaptive`` by
    the number of harmonics below 500 Hz (t1 from version 17), ``uniform`` the same for all (t1
    version 16; model files before format 3 that have a low band)."""

    harmonics: int = 3
    layout: str = "adaptive"


@dataclass
class FrameConfig:
    """Frame-rate model family: causal STFT encoder, ConvNeXt stacks at 100 Hz, iSTFT decoder
    (see ``lrac/models/frame.py`` and ``docs/frame_family.md``).

    ``n_fft``/``hop`` are in samples (``n_fft`` a multiple of ``hop``; frame ``f`` spans the ``n_fft``
    samples that end at ``(f + 1) * hop``). Widths are channels at the frame rate; ``*_mlp_ratio``
    sets each block's hidden width; ``kernel`` is the depthwise (time) kernel in frames.
    ``*_lookahead_frames`` gives that many blocks one frame of look-ahead each (10 ms at hop 240).
    The decoder's overlap-add adds ``(n_fft - hop) / hop`` frames of latency on top.
    ``pitch``: the pitch path, or null for a plain iSTFT head. ``lowband``: the low band coded
    close to the waveform at the highest bitrate, or null.
    """

    n_fft: int = 480
    hop: int = 240
    encoder_dim: int = 256
    encoder_layers: int = 4
    encoder_mlp_ratio: float = 2.0
    decoder_dim: int = 256
    decoder_layers: int = 4
    decoder_mlp_ratio: float = 2.0
    kernel: int = 7
    encoder_lookahead_frames: int = 0
    decoder_lookahead_frames: int = 1
    pitch: Optional[PitchConfig] = None
    lowband: Optional[LowBandConfig] = None


@dataclass
class ModelConfig:
    """Which generator to build. ``family`` is ``"seanet"`` (the official baseline) or ``"frame"``.
    ``track`` is the LRAC track whose limits (latency, compute) the model is built for, and what it
    is trained to do: 1 transparency, 2 enhancement."""

    family: str = "seanet"
    sample_rate: int = 24000
    latent_dim: int = 160
    track: int = 1
    encoder: SeanetEncoderConfig = field(default_factory=SeanetEncoderConfig)
    decoder: SeanetDecoderConfig = field(default_factory=SeanetDecoderConfig)
    frame: FrameConfig = field(default_factory=FrameConfig)


def bitrate_from_kbps(kbps: float, modes_bps: list[int]) -> int:
    """A bitrate given in kbit/s (as the commands take it) -> one of ``modes_bps`` in bit/s;
    ``ValueError`` naming the modes in kbit/s, and the likely slip of a figure in bit/s."""
    bps = int(round(kbps * 1000))
    if bps in modes_bps:
        return bps
    modes = ", ".join(f"{m / 1000:g}" for m in sorted(modes_bps))
    slip = f" ({kbps:g} bit/s? give --bitrate {kbps / 1000:g})" if int(round(kbps)) in modes_bps else ""
    raise ValueError(f"bitrate {kbps:g} kbit/s is not a mode of this model: {modes} kbit/s{slip}")


@dataclass
class QuantizerConfig:
    """Residual quantiser (spec §2.4). One stage carries ``log2(codebook_size)`` bits per frame.
    ``kind`` "vq": EMA codebooks of ``codebook_dim`` floats (the baseline; their EMA settings are
    the spec's, in ``lrac/quant/vq.py``); "fsq": a fixed scalar grid of ``fsq_levels`` bins per
    dimension (``lrac/quant/fsq.py``)."""

    kind: str = "vq"
    n_stages: int = 6
    codebook_size: int = 1024
    codebook_dim: int = 12
    fsq_levels: list[int] = field(default_factory=lambda: [4, 4, 4, 4, 4])
    bitrates_bps: list[int] = field(default_factory=lambda: [1000, 6000])


# --------------------------------------------------------------------------------------------
# training, data, scoring
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Optimisation and loss settings (spec §3). ``steps`` count generator updates.

    The generator loss is the sum of ``lambda_<name> * loss`` over the losses whose weight is
    above 0 (``lrac/train/losses.py``); the adversarial and feature-matching terms start at
    ``warmup_steps`` (before: reconstruction only)."""

    batch_size: int = 384
    segment_samples: int = 62400
    max_steps: int = 11_500_000
    max_minutes: float = 0.0   # > 0: stop (with a checkpoint) after this much wall-clock time
    lr: float = 3e-4
    lr_gamma: float = 0.998
    lr_gamma_every_steps: int = 10_000
    lr_decay_from_step: int = 0   # the decay counts steps from here (a continued run that restarts its schedule)
    lambda_adv: float = 1.0
    lambda_feat: float = 2.0
    lambda_mel: float = 5.0
    lambda_commit: float = 10.0
    # 1 - (an ESTOI-like band-envelope correlation) (losses.EnvelopeCorrelationLoss)
    lambda_estoi: float = 0.0
    # compressed-magnitude L1 over 500 Hz - 1 kHz, relative to the reference's level there
    # (losses.BandMagnitudeLoss; the t1 main run from step 140790)
    lambda_band_magnitude: float = 0.0
    # generator and discriminator in bfloat16 autocast (FFTs, FSQ and the losses stay in float32)
    bf16: bool = False
    disc_n_ffts: list[int] = field(default_factory=lambda: [128, 256, 512, 1024, 2048])
    disc_filters: int = 16
    warmup_steps: int = 0
    # packet-loss concealment (docs/packet_loss.md): > 0: this share of the training chunks loses
    # packets of erasure_packet_frames frames at erasure_rate (a fraction), half of the chunks at
    # random and half in Gilbert-Elliott bursts of erasure_burst packets on average; the decoder
    # gets them as "learned" concealment fills them, and the losses compare with the audio
    erasure_prob: float = 0.0
    erasure_rate: float = 0.15
    erasure_burst: float = 3.0
    erasure_packet_frames: int = 2
    # > 0 (while warmup_steps keeps the whole-chunk discriminator off): the discriminator judges
    # 160 ms around each erased chunk's longest loss, the decode with the losses against the
    # lossless decode of the same chunk, and the generator gets its hinge and feature-matching
    # losses (lambda_adv, lambda_feat) times this weight: reconstruction losses reward the mean of
    # what a gap could hold, which PLCMOS marks down (docs/packet_loss.md)
    lambda_conceal_adv: float = 0.0
    erasure_recon_weight: float = 1.0   # the erased chunks' share of the reconstruction losses
    disc_lr: float = 0.0   # > 0: the discriminator's rate (decaying as lr does); 0: lr
    seed: int = 777
    valid_every_steps: int = 10_000
    valid_batches: int = 8
    keep_best: int = 20
    log_every_steps: int = 50
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 10.0   # also save last.pt this often (slow CPU runs)


@dataclass
class DataConfig:
    """How training audio is filtered and augmented (spec §3.4, §4). Track 2 inputs get noise and
    reverb (RIR files, or simulated rooms without them); Track 1 trains on the speech as it is."""

    min_seconds: float = 2.9
    max_seconds: float = 240.0
    reverb_prob: float = 0.5
    noise_prob: float = 0.8
    snr_db: list[float] = field(default_factory=lambda: [-5.0, 30.0])
    early_reflection_ms: float = 50.0
    simulate_rooms: bool = True
    room_size_m: list[float] = field(default_factory=lambda: [3.0, 10.0])
    rt60_s: list[float] = field(default_factory=lambda: [0.2, 1.0])
    # a random level per training chunk, uniform in dB over this range, the same gain on input and
    # target: talkers quieter or louder than the corpora's own levels; gains above 0 dB stop at full
    # scale ([0, 0]: off)
    level_db: list[float] = field(default_factory=lambda: [0.0, 0.0])
    shuffle_chunks: int = 12000


@dataclass
class ScoreConfig:
    """Settings of ``lrac-score``."""

    bitrates_kbps: list[int] = field(default_factory=lambda: [1, 6])
    max_delay_ms: float = 100.0


MODEL_SECTIONS = ("name", "model", "quantizer")   # what a model file stores: the model's config only


@dataclass
class Config:
    """The whole tree. ``name`` is the model's name (a preset's, or ``custom``); ``model`` and
    ``quantizer`` describe the model (:meth:`model_dict`), the other sections how to train and
    score it."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_dict(self) -> dict[str, Any]:
        """The sections that describe the model (:data:`MODEL_SECTIONS`), as a model file stores them."""
        data = self.to_dict()
        return {key: data[key] for key in MODEL_SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build from a (possibly partial) dict; sections left out take their defaults. Keys of
        earlier lrac versions are translated (:func:`upgrade_legacy`)."""
        return _build(cls, upgrade_legacy(data), "")

    def model_changes(self, other: "Config") -> list[str]:
        """The ``model`` and ``quantizer`` keys whose values differ in ``other``, as
        ``"model.frame.encoder_layers: 6 -> 8"`` lines (empty: the same model)."""
        def flat(tree: Any, prefix: str) -> dict[str, Any]:
            if not isinstance(tree, dict):
                return {prefix: tree}
            return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}.{key}").items()}
        mine, theirs = ({**flat(dataclasses.asdict(c.model), "model"),
                         **flat(dataclasses.asdict(c.quantizer), "quantizer")} for c in (self, other))
        return [f"{k}: {mine.get(k)} -> {theirs.get(k)}" for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)]

    def override(self, assignments: list[str] | dict[str, Any]) -> "Config":
        """Return a copy with dotted keys replaced, e.g. ``["train.lr=1e-4", "quantizer.n_stages=8"]``.

        Values are parsed as YAML (``[1, 2]``, ``true``, ``3e-4``, ``null``; ``{}`` turns an optional
        section such as ``model.frame.pitch`` on with its defaults)."""
        if isinstance(assignments, dict):
            items = list(assignments.items())
        else:
            items = []
            for text in assignments:
                if "=" not in text:
                    raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. train.lr=1e-4)")
                key, value = text.split("=", 1)
                items.append((key.strip(), yaml.safe_load(value)))
        data = self.to_dict()
        for key, value in items:
            if key in LEGACY_KEYS:
                raise ConfigError(f"{key} is no longer a setting of lrac ({LEGACY_KEYS[key][1]})")
            if key in MOVED_KEYS:
                raise ConfigError(f"{key} is now {MOVED_KEYS[key]}")
            node = data
            parts = key.split(".")
            for i, part in enumerate(parts[:-1]):
                if node.get(part) is None and part in node:
                    where = ".".join(parts[: i + 1])
                    raise ConfigError(f"config section {where!r} is off (null); turn it on first "
                                      f"with --set {where}={{}}")
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config key {key!r}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}")
            node[parts[-1]] = value
            if isinstance(value, dict):   # a section turned on: its defaults, for the keys after it
                data = Config.from_dict(data).to_dict()
        return Config.from_dict(data)


# --------------------------------------------------------------------------------------------
# keys of earlier versions
# --------------------------------------------------------------------------------------------

# Keys that earlier lrac versions wrote into model files and checkpoints and that are no longer
# settings: key -> (the value that behaves as lrac does now, or None, why it went). Files that have
# them still load; a value other than that one warns that it is ignored. The pitch rules are the
# shipped models' (fixed in lrac/models/pitch.py); the others were experiments that did not help
# (docs/results.md keeps their record) or settings of one machine (now lrac-train options).
_EXPERIMENT = "an experiment that was not kept"
_MACHINE = "a setting of one machine: an lrac-train option"
_PITCH_RULE = "the pitch path's rules are fixed (lrac/models/pitch.py)"
LEGACY_KEYS: dict[str, tuple[Any, str]] = {
    "model.frame.pitch_late_onsets": (True, _PITCH_RULE),
    "model.frame.pitch_backfill": (True, _PITCH_RULE),
    "model.frame.pitch_glide": (False, _PITCH_RULE),
    "model.frame.voicing_floor_db": (-70.0, _PITCH_RULE),
    "model.frame.voicing_hold": (0.55, _PITCH_RULE),
    "model.frame.voicing_onset_ms": (6.67, _PITCH_RULE),
    "model.frame.voicing_onset_dip": (0.4, _PITCH_RULE),
    "model.frame.pitch_tolerance": (0.06, _PITCH_RULE),
    "quantizer.ema_decay": (0.99, "the baseline's EMA settings are fixed (lrac/quant/vq.py)"),
    "quantizer.epsilon": (1e-5, "the baseline's EMA settings are fixed (lrac/quant/vq.py)"),
    "quantizer.kmeans_iters": (50, "the baseline's EMA settings are fixed (lrac/quant/vq.py)"),
    "quantizer.dead_code_threshold": (2.0, "the baseline's EMA settings are fixed (lrac/quant/vq.py)"),
    "quantizer.dead_code_max_share": (0.1, "the baseline's EMA settings are fixed (lrac/quant/vq.py)"),
    "train.betas": ([0.9, 0.999], "the optimiser's settings are fixed (lrac/train/loop.py)"),
    "train.adam_eps": (1e-9, "the optimiser's settings are fixed (lrac/train/loop.py)"),
    "train.grad_clip": (0.0, _EXPERIMENT),
    "train.mel_n_ffts": ([64, 128, 256, 512, 1024], "the mel loss's scales are the baseline's"),
    "train.mel_bins": ([10, 20, 40, 80, 160], "the mel loss's scales are the baseline's"),
    "train.lambda_stft": (0.0, _EXPERIMENT),
    "train.lambda_complex": (0.0, _EXPERIMENT),
    "train.lambda_phase": (0.0, _EXPERIMENT),
    "train.stft_n_ffts": ([512, 1024, 2048], _EXPERIMENT),
    "train.disc_every": (1, _EXPERIMENT),
    "train.disc_segment_samples": (0, _EXPERIMENT),
    "train.disc_only_steps": (0, _EXPERIMENT),
    "train.bitrate_weights": ([1.0, 1.0], _EXPERIMENT),
    "train.num_workers": (None, _MACHINE),
    "train.threads": (None, _MACHINE),
    "train.lambda_f0": (None, "the predicted pitch was replaced by the coded pitch"),
    "train.lambda_voicing": (None, "the predicted pitch was replaced by the coded pitch"),
    "train.pitch_teacher_forcing": (None, "the predicted pitch was replaced by the coded pitch"),
    "data.train": (None, _MACHINE),
    "data.valid": (None, _MACHINE),
    "data.noise": (None, _MACHINE),
    "data.rir": (None, _MACHINE),
    "data.cache_dir": (None, _MACHINE),
    "data.augment_cache_mb": (None, _MACHINE),
    "data.track1_augment": (False, _EXPERIMENT),
    "data.track1_reverb_prob": (0.25, _EXPERIMENT),
    "data.track1_noise_prob": (0.5, _EXPERIMENT),
    "data.track1_snr_db": ([15.0, 40.0], _EXPERIMENT),
    "score.jobs": (None, "a setting of one machine: lrac-score --jobs"),
}


# Keys of earlier versions that live on under another name (upgrade_legacy moves them).
MOVED_KEYS = {"model.frame.harmonic": "the optional section model.frame.pitch (null: no pitch path)",
              "model.frame.pitch_bits": "model.frame.pitch.bits",
              "model.frame.pitch_every_frames": "model.frame.pitch.every_frames",
              "model.frame.pitch_fine_bits": "model.frame.pitch.fine_bits",
              "model.frame.harmonic_phase": "part of the pitch path (model.frame.pitch)",
              "train.track": "model.track (lrac-train --track)"}


def upgrade_legacy(data: Any) -> Any:
    """A config dict of an earlier lrac version in today's keys (others pass through unchanged).

    ``model.frame.harmonic`` with its ``pitch_bits`` / ``pitch_every_frames`` / ``pitch_fine_bits``
    becomes the optional ``model.frame.pitch`` section (``harmonic_phase`` must be on: it has
    weights, and lrac builds the pitch path with it only); ``train.track`` becomes ``model.track``;
    the keys of :data:`LEGACY_KEYS` are dropped, with a warning where their value changed behaviour."""
    if not isinstance(data, dict):
        return data
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    model = data.get("model")
    if isinstance(model, dict):
        frame = model.get("frame")
        if isinstance(frame, dict) and "harmonic" in frame:
            frame = dict(frame)
            harmonic = frame.pop("harmonic")
            pitch = {new: frame.pop(old) for old, new in (("pitch_bits", "bits"),
                                                          ("pitch_every_frames", "every_frames"),
                                                          ("pitch_fine_bits", "fine_bits")) if old in frame}
            pitch["fine_levels"] = "uniform"   # the only refinement then
            phase = frame.pop("harmonic_phase", False)
            if harmonic and not phase:
                raise ConfigError("model.frame.harmonic_phase=false: a pitch path without the learnt "
                                  "harmonic phase, which lrac no longer builds (lrac 0.1.0 and earlier did)")
            frame["pitch"] = pitch if harmonic else None
            if not harmonic:   # the pitch rules of a model without a pitch path change nothing
                frame = {k: v for k, v in frame.items() if f"model.frame.{k}" not in LEGACY_KEYS}
            model["frame"] = frame
    train = data.get("train")
    if isinstance(train, dict) and "track" in train:
        track = train.pop("track")
        if isinstance(model, dict):
            model.setdefault("track", track)
        else:
            data["model"] = {"track": track}
    for key, (current, why) in LEGACY_KEYS.items():
        section, name = key.rsplit(".", 1)
        node = data
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            continue
        value = node.pop(name)
        if current is not None and value != current:
            warnings.warn(f"{key}={value} is ignored: {why}", stacklevel=3)
    return data


def _build(cls, data: Any, path: str):
    """Recursively build dataclass ``cls`` from a dict, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {path or '<root>'!r} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = path or "<root>"
        raise ConfigError(f"unknown config key(s) {unknown} in {where!r}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _coerce(tp, value, path):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):   # Optional[X]: None, or an X
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(inner, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {path!r} must be a list, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(item_tp, v, path) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key {path!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {path!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        return str(value)
    return value


def preset_names() -> list[str]:
    """Names of the presets shipped in ``lrac/presets``."""
    folder = resources.files("lrac") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(name_or_path: str | Path | dict | Config = "t1",
                overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a preset by name (``t1``, ``baseline-t1``), a YAML file path, a dict, or pass a Config through.

    ``overrides`` are dotted ``KEY=VALUE`` strings or a dict, applied last."""
    if isinstance(name_or_path, Config):
        cfg = name_or_path
    elif isinstance(name_or_path, dict):
        cfg = Config.from_dict(name_or_path)
    else:
        text = str(name_or_path)
        path = Path(text)
        # a file, else a preset: a folder that happens to share a preset's name (a run's output
        # called t1) does not hide the preset
        if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"config file not found: {text}")
            raw = path.read_text()
            data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
            cfg = Config.from_dict(data or {})
        else:
            if text not in preset_names():
                what = "a folder, not a config file" if path.is_dir() else "an unknown preset"
                raise ConfigError(f"{text!r} is {what}; presets: {', '.join(preset_names())}"
                                  " (or give a path to a .yaml file)")
            resource = resources.files("lrac") / "presets" / f"{text}.yaml"
            cfg = Config.from_dict(yaml.safe_load(resource.read_text()))
    if overrides:
        cfg = cfg.override(overrides)
    return cfg

"""The one configuration of lrac: a tree of dataclasses, named presets, YAML, dotted overrides.

Every command and every saved model uses :class:`Config`. A model file stores ``Config.to_dict()``,
so the file alone rebuilds its codec. Presets live in ``lrac/presets/<name>.yaml``.

This module imports nothing of lrac (arrows point down only).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

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
class FrameConfig:
    """Frame-rate model family: causal STFT encoder, ConvNeXt stacks at 100 Hz, iSTFT decoder
    (see ``lrac/models/frame.py`` and ``docs/frame_family.md``).

    ``n_fft``/``hop`` are in samples (``n_fft`` a multiple of ``hop``; frame ``f`` spans the ``n_fft``
    samples that end at ``(f + 1) * hop``). Widths are channels at the frame rate; ``*_mlp_ratio``
    sets each block's hidden width; ``kernel`` is the depthwise (time) kernel in frames.
    ``*_lookahead_frames`` gives that many blocks one frame of look-ahead each (10 ms at hop 240).
    The decoder's overlap-add adds ``(n_fft - hop) / hop`` frames of latency on top.
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
    # pitch path (lrac/models/pitch.py): the encoder tracks the pitch (causal YIN) and sends it as a
    # code of pitch_bits bits every pitch_every_frames frames (64 levels / 20 ms: 300 bit/s, taken
    # from the first token of each frame, so the bitrates stay); the decoder mixes a pulse train at
    # that pitch, under the same envelope, into the iSTFT spectrum (a learnt harmonic share per bin)
    harmonic: bool = False
    pitch_bits: int = 6
    pitch_every_frames: int = 2
    # > 0: each frame's own pitch against that code, in this many bits of the second token (6 kbps
    # and up; 16-cent steps): every frame's pitch instead of every other frame's
    pitch_fine_bits: int = 0
    # true (needs pitch_fine_bits): a voiced frame in a group coded unvoiced (its first frame was)
    # sends its pitch class in its refinement bits, unused there, and is voiced at once instead of
    # waiting for the next group's code (docs/frame_family.md, "Voicing"); 1 kbps does not carry it
    pitch_late_onsets: bool = False
    # true: the decoder also voices the frame before an onset, at the onset's pitch: the tracker finds
    # a voice 10-15 ms after it starts, and the decoder's look-ahead frame shows the onset in time
    pitch_backfill: bool = False
    # true: the pulse train's pitch glides over each hop from the previous frame's pitch to this
    # frame's, so it reaches a frame's pitch a hop after the envelope that goes with it (the first
    # models); false: each hop holds its own frame's pitch and voicing (t1 version 12 coding that
    # way: +0.07-0.11 PESQ-WB at 6 kbps, docs/results.md, session 14)
    pitch_glide: bool = True
    # the pitch path's pulse train has all harmonics in cosine phase; true: the decoder head also
    # gives a phase per bin for the harmonic part (the phase response of the glottis and vocal tract)
    harmonic_phase: bool = False
    # voicing of the pitch tracker: frames quieter than voicing_floor_db (mean square, dB re full
    # scale) are unvoiced; voicing_hold > 0 adds hysteresis: a voiced run goes on while the YIN dip
    # stays below voicing_hold (the onset still needs a dip below 0.2)
    voicing_floor_db: float = -50.0
    voicing_hold: float = 0.0
    # > 0: a second YIN on the newest voicing_onset_ms of each frame also voices a frame whose dip
    # there is below voicing_onset_dip. A causal 13.3 ms window sees a voice only once a period and
    # the window lie inside it; the short one finds onsets about a frame sooner (docs/frame_family.md)
    voicing_onset_ms: float = 0.0
    voicing_onset_dip: float = 0.4
    # > 0: every voiced frame takes the period of the first YIN minimum within this much of the
    # deepest (the long window's), not the first one below 0.2 (fewer octave errors; 0: off)
    pitch_tolerance: float = 0.0


@dataclass
class ModelConfig:
    """Which generator to build. ``family`` is ``"seanet"`` (the official baseline) or ``"frame"``."""

    family: str = "seanet"
    sample_rate: int = 24000
    latent_dim: int = 160
    encoder: SeanetEncoderConfig = field(default_factory=SeanetEncoderConfig)
    decoder: SeanetDecoderConfig = field(default_factory=SeanetDecoderConfig)
    frame: FrameConfig = field(default_factory=FrameConfig)


@dataclass
class QuantizerConfig:
    """Residual VQ (spec §2.4). One stage carries ``log2(codebook_size)`` bits per frame."""

    kind: str = "vq"                    # "vq": EMA codebooks (baseline); "fsq": scalar grid (fsq.py)
    n_stages: int = 6
    codebook_size: int = 1024
    codebook_dim: int = 12
    ema_decay: float = 0.99
    epsilon: float = 1e-5
    kmeans_iters: int = 50
    dead_code_threshold: float = 2.0
    dead_code_max_share: float = 0.1   # cap: share of a code's mean frames per step (vq.py)
    fsq_levels: list[int] = field(default_factory=lambda: [4, 4, 4, 4, 4])  # kind "fsq": bins per dim
    bitrates_bps: list[int] = field(default_factory=lambda: [1000, 6000])


# --------------------------------------------------------------------------------------------
# training, data, scoring
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Optimisation and loss settings (spec §3). ``steps`` count generator updates."""

    track: int = 1
    batch_size: int = 384
    segment_samples: int = 62400
    max_steps: int = 11_500_000
    max_minutes: float = 0.0   # > 0: stop (with a checkpoint) after this much wall-clock time
    lr: float = 3e-4
    disc_lr: float = 0.0       # > 0: the discriminator's own learning rate (0: train.lr, as the baseline)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-9
    lr_gamma: float = 0.998
    lr_gamma_every_steps: int = 10_000
    lr_decay_from_step: int = 0   # the decay counts steps from here (a continued run that restarts its schedule)
    grad_clip: float = 0.0
    lambda_adv: float = 1.0
    lambda_feat: float = 2.0
    lambda_mel: float = 5.0
    lambda_commit: float = 10.0
    mel_n_ffts: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    mel_bins: list[int] = field(default_factory=lambda: [10, 20, 40, 80, 160])
    lambda_stft: float = 0.0   # > 0: add a linear-frequency log-STFT loss (losses.LogSTFTLoss)
    stft_n_ffts: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    # > 0: add 1 - (an ESTOI-like band-envelope correlation) (losses.EnvelopeCorrelationLoss)
    lambda_estoi: float = 0.0
    disc_n_ffts: list[int] = field(default_factory=lambda: [128, 256, 512, 1024, 2048])
    disc_filters: int = 16
    disc_every: int = 1
    # > 0: the discriminator sees a random crop of this many samples of each chunk (the same span of
    # y and y_hat; HiFi-GAN's 0.37 s segments), the mel loss still the whole chunk: about 2x faster
    disc_segment_samples: int = 0
    warmup_steps: int = 0
    # > 0: the first N steps from warmup_steps train the discriminator alone (the generator frozen):
    # a GAN phase started from a reconstruction-only run first learns to tell real from coded
    # speech, so the generator does not follow an untrained critic (docs/results.md, session 11)
    disc_only_steps: int = 0
    bitrate_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    seed: int = 777
    valid_every_steps: int = 10_000
    valid_batches: int = 8
    keep_best: int = 20
    log_every_steps: int = 50
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 10.0   # also save last.pt this often (slow CPU runs)
    num_workers: int = 0       # data worker processes per rank (0: one background thread); GPUs want 4-8
    threads: int = 0


@dataclass
class DataConfig:
    """Where the audio is and how it is filtered and augmented (spec §3.4, §4)."""

    train: str = ""
    valid: str = ""
    noise: str = ""
    rir: str = ""
    cache_dir: str = ""
    min_seconds: float = 2.9
    max_seconds: float = 240.0
    reverb_prob: float = 0.5
    noise_prob: float = 0.8
    snr_db: list[float] = field(default_factory=lambda: [-5.0, 30.0])
    early_reflection_ms: float = 50.0
    simulate_rooms: bool = True
    room_size_m: list[float] = field(default_factory=lambda: [3.0, 10.0])
    rt60_s: list[float] = field(default_factory=lambda: [0.2, 1.0])
    track1_augment: bool = False
    track1_reverb_prob: float = 0.25        # mild Track 1 degradation (only with track1_augment)
    track1_noise_prob: float = 0.5
    track1_snr_db: list[float] = field(default_factory=lambda: [15.0, 40.0])
    # a random level per training chunk, uniform in dB over this range, the same gain on input and
    # target: talkers quieter or louder than the corpora's own levels; gains above 0 dB stop at full
    # scale ([0, 0]: off; docs/results.md, sessions 8 and 9)
    level_db: list[float] = field(default_factory=lambda: [0.0, 0.0])
    shuffle_chunks: int = 12000
    # memory (MiB, per run, shared by its data workers) for augmented utterances, so that each one is
    # decoded and augmented once per epoch rather than once per chunk: about 10x the chunks per
    # second (docs/results.md, session 10); the train split needs about 1 GiB (Track 1) or 2 (Track 2)
    augment_cache_mb: float = 2048.0


@dataclass
class ScoreConfig:
    """Settings of ``lrac-score``."""

    bitrates_kbps: list[int] = field(default_factory=lambda: [1, 6])
    max_delay_ms: float = 100.0
    jobs: int = 1


@dataclass
class Config:
    """The whole tree. ``name`` is the preset it came from (informational)."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return _build(cls, data, "")

    def model_changes(self, other: "Config") -> list[str]:
        """The ``model`` and ``quantizer`` keys whose values differ in ``other``, as
        ``"model.frame.voicing_hold: 0.0 -> 0.35"`` lines (empty: the same model)."""
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

        Values are parsed as YAML (``[1, 2]``, ``true``, ``3e-4``)."""
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
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config key {key!r}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}")
            node[parts[-1]] = value
        return Config.from_dict(data)


# Keys of earlier versions that no longer mean anything; model files and YAMLs that still have
# them load as if they were absent. (The training settings of the predicted-pitch decoder, which
# the coded pitch replaced: they never changed what a trained model computes.)
RETIRED_KEYS = {"train.lambda_f0", "train.lambda_voicing", "train.pitch_teacher_forcing"}


def _build(cls, data: Any, path: str):
    """Recursively build dataclass ``cls`` from a dict, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {path or '<root>'!r} must be a mapping, got {data!r}")
    data = {k: v for k, v in data.items() if f"{path}.{k}" not in RETIRED_KEYS}
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
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {path!r} must be a list, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(item_tp, v, path) for v in value]
    if origin is Union:
        return value
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


def load_config(name_or_path: str | Path | dict | Config = "baseline-t1",
                overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a preset by name (``baseline-t1``), a YAML file path, a dict, or pass a Config through.

    ``overrides`` are dotted ``KEY=VALUE`` strings or a dict, applied last."""
    if isinstance(name_or_path, Config):
        cfg = name_or_path
    elif isinstance(name_or_path, dict):
        cfg = Config.from_dict(name_or_path)
    else:
        text = str(name_or_path)
        path = Path(text)
        if path.suffix in (".yaml", ".yml", ".json") or path.exists():
            if not path.is_file():
                raise ConfigError(f"config file not found: {text}")
            raw = path.read_text()
            data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
            cfg = Config.from_dict(data or {})
        else:
            if text not in preset_names():
                raise ConfigError(f"unknown preset {text!r}; presets: {', '.join(preset_names())}"
                                  " (or give a path to a .yaml file)")
            resource = resources.files("lrac") / "presets" / f"{text}.yaml"
            cfg = Config.from_dict(yaml.safe_load(resource.read_text()))
    if overrides:
        cfg = cfg.override(overrides)
    return cfg

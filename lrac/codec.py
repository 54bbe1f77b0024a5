"""The :class:`Codec` facade: build from config, save/load, encode/decode, streaming.

Shapes: audio ``[B, 1, T]`` at ``codec.sample_rate``; tokens ``[B, n_q, frames]`` (int64), one frame
per ``hop_length`` samples; ``n_q`` codebooks of ``2**bits`` codes give ``n_q * bits * frame_rate`` bit/s.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import full_scale_warning
from .conceal import ConcealState, check_method, conceal
from .config import Config, load_config
from .models import Decoder, Encoder, build_nets
from .models.conv import fold_weight_norm
from .models.streaming import StreamSession
from .packets import MAX_FRAMES, PacketFormat
from .quant import ResidualVQ
from .tokens import LATENT, TokenLayout, token_layout

MODEL_FORMAT = "lrac-model"
SILENCE_FRAMES = 32  # frames of zeros coded to find the tokens of silence (the encoders' context is shorter)
MODEL_VERSION = 4   # 4: the pitch refinement names its levels; 3: the low-band code names its layout;
                    # 2: the model's config only (name, model, quantizer); 1 stored the whole Config
PRETRAINED_DIR = Path(__file__).parent / "pretrained"  # the model files shipped in the package


class Generator(nn.Module):
    """Encoder -> ResidualVQ -> Decoder, the part a GAN trains and a model file ships.
    ``layout`` (``lrac/tokens.py``) says which token bits carry the latent and which the symbols
    the encoder sends beside it."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        encoder_net, decoder_net = build_nets(cfg.model)
        self.encoder = Encoder(cfg.model, encoder_net)
        self.layout: TokenLayout = token_layout(cfg.model, cfg.quantizer)
        self.quantizer = ResidualVQ(cfg.model.latent_dim, cfg.quantizer, self.layout.bits(LATENT))
        self.decoder = Decoder(cfg.model, decoder_net)

    def forward(self, wav: torch.Tensor, n_q: int, lost: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: ``wav [B, 1, T]`` (T a multiple of the hop) -> ``(wav_hat [B, 1, T],
        commitment loss)``. Codebooks update themselves in train mode; the symbols beside the
        latent (the pitch) go to the decoder as the tokens of ``n_q`` stages would carry them.
        ``lost [B, F]`` (bool, optional): frames erased as a lost packet would, filled in as
        "learned" concealment fills them (lrac/conceal.py). Each part runs in its
        weights' dtype: float32 in training, a float64 send side after :meth:`Codec.set_exact`."""
        latent, symbols = self.encoder.analyze(wav.to(_dtype_of(self.encoder)))
        with torch.autocast(wav.device.type, enabled=False):   # the FSQ grid in float32 under bfloat16 training
            quantized, _, commit = self.quantizer(latent.to(_dtype_of(self.quantizer)),
                                                  self.layout.rows_carried(LATENT, n_q))
        symbols = self.layout.carried(symbols, n_q)
        if lost is not None:
            quantized, symbols = conceal(quantized, symbols, lost, self.silence(n_q), "learned",
                                         self.decoder.missing_latent, self.decoder.symbol_periods)
        return self.decoder(quantized.to(_dtype_of(self.decoder)), symbols), commit

    @torch.no_grad()
    def silence(self, n_q: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Digital silence as the decoder receives it at ``n_q`` stages: ``(latent [1, D, P],
        {sub-code: symbols [1, rows, P]})``, one frame per position ``0..P-1`` of the longest
        symbol period, after enough frames for the encoder's context to hold only zeros."""
        period = max([1, *(p for rows in self.decoder.symbol_periods.values() for p in rows)])
        frames = period * -(-SILENCE_FRAMES // period)
        weight = next(self.encoder.parameters())
        wav = torch.zeros(1, 1, frames * self.encoder.hop_length, dtype=weight.dtype, device=weight.device)
        latent, symbols = self.encoder.analyze(wav)
        indices = self.quantizer.encode(latent, self.layout.rows_carried(LATENT, n_q))
        quantized = self.quantizer.decode(indices)[..., -period:]
        return quantized, {k: v[..., -period:] for k, v in self.layout.carried(symbols, n_q).items()}


def _dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype of a module's (first) weights."""
    return next(module.parameters()).dtype


def as_float_audio(audio: Any, name: str = "audio", warn: bool = True) -> tuple[torch.Tensor, bool]:
    """numpy or torch audio as a float32 tensor, by one rule: float samples as they are (clipped to
    [-1, 1], with a warning unless ``warn`` is False, when they go beyond), int16 PCM scaled by
    1/32768; other types refused. Returns ``(audio, whether it was clipped)``."""
    x = torch.from_numpy(np.ascontiguousarray(audio)) if isinstance(audio, np.ndarray) else audio
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(audio).__name__}")
    if x.dtype == torch.int16:
        return x.float() / 32768.0, False
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be float samples in [-1, 1] or int16 PCM, got {x.dtype}")
    x = x.float()
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak <= 1.0:
        return x, False
    if warn:
        warnings.warn(full_scale_warning(name, peak), stacklevel=3)
    return x.clamp(-1.0, 1.0), True


def as_batch(audio: Any) -> torch.Tensor:
    """Accept numpy or torch audio ``[T]``, ``[1, T]`` or ``[B, 1, T]`` (see :func:`as_float_audio`);
    return ``[B, 1, T]``."""
    x, _ = as_float_audio(audio)
    if x.dim() == 1:
        x = x[None, None]
    elif x.dim() == 2:
        if x.shape[0] != 1:
            raise ValueError(f"2-D audio must be [1, T] (mono), got shape {tuple(x.shape)}; "
                             "use [B, 1, T] for a batch")
        x = x[None]
    elif x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"audio must be [T], [1, T] or [B, 1, T], got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError("audio is empty (0 samples)")
    return x


class Codec:
    """A speech codec: ``encode(audio) -> tokens`` and ``decode(tokens) -> audio``.

    Args:
        config: a :class:`Config`, a preset name (``"baseline-t1"``) or a YAML path.
    """

    def __init__(self, config: Config | str = "baseline-t1") -> None:
        self.config = load_config(config)
        self.generator = Generator(self.config)
        self.generator.eval()
        self.weight_norm_folded = False
        self.model_id = self.compute_model_id()
        self.note = ""  # what users should know about these weights (stored in the model file)
        self.made = ""  # how these weights were made: a run's step, a mean of steps (stored too)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        return self.generator.encoder

    @property
    def quantizer(self) -> ResidualVQ:
        return self.generator.quantizer

    @property
    def decoder(self) -> Decoder:
        return self.generator.decoder

    @property
    def layout(self) -> TokenLayout:
        """Which bits of the tokens carry what (``lrac/tokens.py``)."""
        return self.generator.layout

    @property
    def sample_rate(self) -> int:
        return self.config.model.sample_rate

    @property
    def hop_length(self) -> int:
        """Samples per token frame."""
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        """Token frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def bits_per_index(self) -> int:
        """Bits per token."""
        return self.layout.bits_per_token

    @property
    def n_stages(self) -> int:
        """Tokens per frame at the highest bitrate."""
        return self.layout.n_stages

    @property
    def bitrates_bps(self) -> list[int]:
        """The bitrates this codec was trained for (bit/s), e.g. ``[1000, 6000]``."""
        return list(self.config.quantizer.bitrates_bps)

    def bitrate_for_stages(self, n_q: int) -> int:
        return int(round(n_q * self.bits_per_index * self.frame_rate))

    def stages_for_bitrate(self, bitrate_bps: int) -> int:
        """Number of RVQ stages for a supported bitrate; ``ValueError`` listing the valid ones."""
        for n_q in range(1, self.n_stages + 1):
            if self.bitrate_for_stages(n_q) == bitrate_bps and bitrate_bps in self.bitrates_bps:
                return n_q
        valid = ", ".join(str(b) for b in self.bitrates_bps)
        raise ValueError(f"unsupported bitrate {bitrate_bps} bit/s; this codec supports: {valid}")

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device: str | torch.device) -> "Codec":
        self.generator.to(device)
        return self

    # -- identity, save, load -----------------------------------------------------------------------
    def compute_model_id(self) -> bytes:
        """8 bytes identifying the model's config and weights; written into every ``.lrac`` header
        (:func:`model_identity`)."""
        return model_identity(self.config.model_dict(), self._state_dict32())

    def _state_dict32(self) -> dict[str, torch.Tensor]:
        """Generator weights with floats in float32 (whatever :meth:`set_exact` chose)."""
        return {k: v.detach().float() if v.is_floating_point() else v.detach()
                for k, v in self.generator.state_dict().items()}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None, half: bool = False) -> None:
        """Write the model's config, the generator weights and their provenance (:attr:`note`,
        :attr:`made`; + ``extra`` entries) atomically; refreshes ``model_id``.

        With ``half`` the weights are first rounded to float16 (in this codec too, so that it
        behaves as the file will) and stored so: half the size, for the models shipped in the
        package. They load back as float32."""
        if half:
            with torch.no_grad():
                for tensor in self.generator.state_dict().values():
                    if tensor.is_floating_point():
                        tensor.copy_(tensor.half())
        weights = self._state_dict32()
        if half:
            weights = half_state_dict(weights)
        self.model_id = self.compute_model_id()
        state = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": self.config.model_dict(),
                 "generator": weights, "model_id": self.model_id.hex(), "note": self.note,
                 "made": self.made, "weight_norm_folded": self.weight_norm_folded}
        state.update(extra or {})
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | Path, inference: bool = True, exact: bool = True,
             map_location: str = "cpu") -> "Codec":
        """Rebuild a codec from a model file (or a training checkpoint holding one). Files of earlier
        versions, which stored the whole config, load too (:func:`lrac.config.upgrade_legacy`).

        With ``inference`` the weight norm is folded into plain weights (faster, not trainable) and,
        with ``exact``, the send side runs in float64 (see :meth:`set_exact`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model file not found")
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable lrac model file ({type(exc).__name__})") from None
        if not isinstance(state, dict) or "config" not in state or "generator" not in state:
            raise ValueError(f"{path}: not an lrac model file (no config/generator inside)")
        for key, tensor in state["generator"].items():   # one NaN would decode every file to noise
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and \
                    not torch.isfinite(tensor).all():
                bad = int((~torch.isfinite(tensor)).sum())
                raise ValueError(f"{path}: weight {key} holds {bad} NaN or infinite value(s); "
                                 "the file is damaged")
        codec = cls(Config.from_dict(_upgrade_model_config(state["config"], state.get("version", 1))))
        if state.get("weight_norm_folded"):
            codec.fold_weight_norm()
        try:
            codec.generator.load_state_dict(state["generator"])
        except RuntimeError:  # e.g. a predicted-pitch file of lrac 0.1.0's first weeks
            raise ValueError(f"{path}: its weights do not fit the model its config describes "
                             "(a file of an earlier lrac version?)") from None
        # the identity .lrac headers carry is computed from what the file stores: a file whose
        # weights were changed after saving cannot claim the original's identity
        codec.model_id = model_identity(state["config"], state["generator"])
        if "model_id" in state and state["model_id"] != codec.model_id.hex():
            raise ValueError(f"{path}: its weights are not the ones its model id "
                             f"{state['model_id']} was computed from (changed after saving?)")
        codec.note = str(state.get("note", ""))
        codec.made = str(state.get("made", ""))
        if inference and not codec.weight_norm_folded:
            codec.fold_weight_norm()
        if inference:
            codec.set_exact(exact)
        return codec

    def set_exact(self, exact: bool = True) -> "Codec":
        """Run the encoder and quantizer in float64 (``exact``) or float32.

        float32 convolutions round differently for different chunk lengths (~1e-7), which flips
        about one token in 10^4 between streaming and one-pass encoding; in float64 the tokens do
        not depend on chunking, so ``--chunk-ms`` writes the same bytes. The decoder stays float32
        (its chunked output already agrees within 1e-5). Encoding costs about 5x more compute."""
        dtype = torch.float64 if exact else torch.float32
        self.encoder.to(dtype)
        self.quantizer.to(dtype)
        return self

    @property
    def encode_dtype(self) -> torch.dtype:
        return _dtype_of(self.encoder)

    @property
    def decode_dtype(self) -> torch.dtype:
        return _dtype_of(self.decoder)

    def _tokens(self, wav: torch.Tensor, n_q: int) -> torch.Tensor:
        """Send side: audio ``[B, 1, T]`` (whole frames, or a streamed chunk) -> tokens ``[B, n_q, F]``."""
        latent, symbols = self.encoder.analyze(wav)
        indices = self.quantizer.encode(latent, self.layout.rows_carried(LATENT, n_q))
        return self.layout.pack({LATENT: indices, **symbols}, n_q)

    def _decoder_inputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Tokens ``[B, n_q, F]`` -> ``(latent [B, D, F], {sub-code: symbols [B, rows, F]})``."""
        symbols = self.layout.unpack(tokens)
        return self.quantizer.decode(symbols.pop(LATENT)).to(self.decode_dtype), symbols

    def _synthesize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Receive side: tokens ``[B, n_q, F]`` -> audio ``[B, 1, F * hop]`` (or a streamed part)."""
        return self.decoder(*self._decoder_inputs(tokens))

    @property
    def default_concealment(self) -> str:
        """"learned" once the decoder's missing latent was trained (it starts at exactly zero and
        any erasure training moves it), else "repeat"."""
        return "learned" if bool(self.decoder.missing_latent.detach().any()) else "repeat"

    @staticmethod
    def pretrained_names() -> list[str]:
        """Names of the pretrained models installed with the package (``t1``, ``t2``)."""
        return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt")) if PRETRAINED_DIR.is_dir() else []

    @classmethod
    def pretrained_name_of(cls, model_id: bytes) -> str | None:
        """The installed pretrained model with this identity (a ``.lrac`` header's), or None."""
        for name in cls.pretrained_names():
            state = torch.load(PRETRAINED_DIR / f"{name}.pt", map_location="cpu", weights_only=False)
            if state.get("model_id") == model_id.hex():
                return name
        return None

    @classmethod
    def pretrained(cls, name: str = "t1") -> "Codec":
        """A pretrained model shipped inside the package (no network): ``"t1"`` or ``"t2"``."""
        path = PRETRAINED_DIR / f"{name}.pt"
        if not path.is_file():
            have = ", ".join(cls.pretrained_names()) or "none installed"
            raise FileNotFoundError(f"no pretrained model {name!r} (installed: {have})")
        codec = cls.load(path)
        codec.config.name = name   # (files of lrac 0.1.0 named the preset they started from)
        return codec

    def fold_weight_norm(self) -> "Codec":
        """Fold weight norm into plain weights for inference (irreversible, same outputs)."""
        fold_weight_norm(self.generator)
        self.weight_norm_folded = True
        return self

    # -- one-pass coding ----------------------------------------------------------------------------
    def _pad_to_frames(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, (-x.shape[-1]) % self.hop_length))

    @torch.inference_mode()
    def encode(self, audio: Any, bitrate_bps: int = 6000) -> torch.Tensor:
        """Audio ``[T]``, ``[1, T]`` or ``[B, 1, T]`` (numpy or torch) -> tokens ``[B, n_q, frames]``.

        ``frames = ceil(T / hop_length)``: the last frame is padded with zeros, so pass
        ``length=T`` to :meth:`decode` to get ``T`` samples back."""
        n_q = self.stages_for_bitrate(bitrate_bps)
        x = as_batch(audio).to(self.device, self.encode_dtype)
        with _eval(self.generator):
            return self._tokens(self._pad_to_frames(x), n_q)

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate tokens ``[n_q, F]`` or ``[B, n_q, F]``; return them as ``[B, n_q, F]`` int64."""
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.as_tensor(np.asarray(tokens))
        t = tokens[None] if tokens.dim() == 2 else tokens
        if t.dim() != 3:
            raise ValueError(f"tokens must be [B, n_q, frames], got shape {tuple(tokens.shape)}")
        if t.dtype.is_floating_point:
            raise ValueError(f"tokens must be integers, got {t.dtype}")
        self.stages_for_bitrate(self.bitrate_for_stages(t.shape[1]))
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.layout.values):
            raise ValueError(f"token values must be in 0..{self.layout.values - 1}")
        return t.long()

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Tokens ``[B, n_q, frames]`` -> audio ``[B, 1, T]``.

        ``T = frames * hop_length``, or ``length`` (the input's length, at most that) when given."""
        t = self.check_tokens(tokens).to(self.device)
        if t.shape[-1] == 0:
            raise ValueError("tokens hold no frames: nothing to decode")
        if length is not None and not 0 <= length <= t.shape[-1] * self.hop_length:
            raise ValueError(f"length must be 0..{t.shape[-1] * self.hop_length} samples for "
                             f"{t.shape[-1]} frames, got {length}")
        with _eval(self.generator):
            wav = self._synthesize(t)
        return wav[..., :length] if length is not None else wav

    # -- export -------------------------------------------------------------------------------------
    def export_onnx(self, out_dir: str | Path, **options: Any) -> dict:
        """Write the streaming encoder and decoder as ONNX graphs for ``lrac.runtime`` (or any ONNX
        Runtime API) into ``out_dir``; ``options`` as :func:`lrac.export.export_onnx`. Returns the
        sidecar (``lrac-onnx.json``)."""
        from .export import export_onnx
        return export_onnx(self, out_dir, **options)

    # -- streaming ----------------------------------------------------------------------------------
    def stream_encoder(self, bitrate_bps: int = 6000, batch_size: int = 1) -> "StreamEncoder":
        return StreamEncoder(self, bitrate_bps, batch_size)

    def stream_decoder(self, batch_size: int = 1, conceal: str | None = None) -> "StreamDecoder":
        """``conceal``: how :meth:`StreamDecoder.decode_packet` fills lost packets (lrac/conceal.py;
        default :attr:`default_concealment`)."""
        return StreamDecoder(self, batch_size, conceal)


class StreamEncoder:
    """Encode audio chunk by chunk; tokens equal :meth:`Codec.encode` of the whole signal.

    ``push(chunk)`` takes ``[n]``/``[1, n]``/``[B, 1, n]`` audio of any length ``n >= 0`` and returns
    the token frames completed so far ``[B, n_q, f]`` (``f`` may be 0: look-ahead holds frames back).
    ``flush()`` pads the last partial frame with zeros and returns the remaining frames.
    For real-time transport, :meth:`encode_packet` codes 10-40 ms of audio into a packet
    (lrac/packets.py) and :meth:`flush_packets` ends the stream; use either ``push`` or packets.
    """

    def __init__(self, codec: Codec, bitrate_bps: int, batch_size: int = 1) -> None:
        self.codec = codec
        self.n_q = codec.stages_for_bitrate(bitrate_bps)
        self.batch_size = batch_size
        self.session = StreamSession(codec.encoder, batch_size, lambda x: codec._tokens(x, self.n_q))
        self.num_samples = 0
        self.clipped = False
        self.pending = torch.zeros(batch_size, self.n_q, 0, dtype=torch.long)  # coded, not yet sent
        self.packet_frames = 0

    def _as_chunk(self, audio: Any) -> torch.Tensor:
        x, clipped = as_float_audio(audio, "audio stream", warn=not self.clipped)  # warn once per stream
        self.clipped |= clipped
        x = x.reshape(self.batch_size, 1, -1) if x.dim() < 3 else x
        return x.to(self.codec.device, self.codec.encode_dtype)

    @torch.inference_mode()
    def push(self, audio: Any) -> torch.Tensor:
        x = self._as_chunk(audio)
        self.num_samples += x.shape[-1]
        with _eval(self.codec.generator):
            return self.session(x)

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        pad = (-self.num_samples) % self.codec.hop_length
        zeros = torch.zeros(self.batch_size, 1, pad, device=self.codec.device,
                            dtype=self.codec.encode_dtype)
        with _eval(self.codec.generator):
            return self.session.flush(zeros)

    def encode_packet(self, pcm: Any) -> bytes:
        """Audio of 1-4 whole frames (``[n]`` or ``[1, n]``, ``n`` = 240-960 samples at 24 kHz:
        10-40 ms) -> one packet of as many frames (lrac/packets.py). An encoder with look-ahead
        (Track 2) holds its first frames back: it returns ``b""`` (nothing to send) until they
        are complete, and its packets then lag by that look-ahead."""
        if self.batch_size != 1:
            raise ValueError(f"packets are coded one stream at a time (batch size 1, this encoder has "
                             f"{self.batch_size})")
        x = self._as_chunk(pcm)
        hop = self.codec.hop_length
        frames, rest = divmod(x.shape[-1], hop)
        if rest or not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"a packet codes 1-{MAX_FRAMES} whole frames of {hop} samples "
                             f"({hop}-{MAX_FRAMES * hop} samples), got {x.shape[-1]}")
        self.packet_frames = frames
        self.pending = torch.cat([self.pending, self.push(x).cpu()], -1)
        return self._next_packet(frames)

    def flush_packets(self) -> list[bytes]:
        """End the stream: the frames held back (and a last partial frame), as packets of the size
        :meth:`encode_packet` used last."""
        self.pending = torch.cat([self.pending, self.flush().cpu()], -1)
        packets = []
        while self.pending.shape[-1]:
            packets.append(self._next_packet(self.packet_frames or MAX_FRAMES))
        return packets

    def _next_packet(self, frames: int) -> bytes:
        if not self.pending.shape[-1]:
            return b""
        tokens, self.pending = self.pending[0, :, :frames], self.pending[..., frames:]
        return PacketFormat.of(self.codec).pack(tokens.numpy())


class StreamDecoder:
    """Decode tokens chunk by chunk; audio equals :meth:`Codec.decode` of all tokens.

    ``push(tokens [B, n_q, f])`` returns the audio completed so far ``[B, 1, n]``; ``flush(length)``
    returns the rest, cropped so that the total is ``length`` samples when given.
    For real-time transport, :meth:`decode_packet` takes packets, or ``None`` for a lost one
    (concealed by ``conceal``: lrac/conceal.py); use either ``push`` or packets in one stream.
    """

    def __init__(self, codec: Codec, batch_size: int = 1, conceal: str | None = None) -> None:
        self.codec = codec
        self.batch_size = batch_size
        self.session = StreamSession(codec.decoder, batch_size, codec.decoder)
        self.emitted = 0
        self.conceal = check_method(conceal or codec.default_concealment)
        self.conceal_state = ConcealState()
        self.packet_frames = 2     # what a lost packet stands for until one has arrived (20 ms)
        self.n_q = min(codec.stages_for_bitrate(b) for b in codec.bitrates_bps)
        self._silence: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def _run(self, latent: torch.Tensor, symbols: dict[str, torch.Tensor]) -> torch.Tensor:
        with _eval(self.codec.generator):
            wav = self.session(latent, symbols)
        self.emitted += wav.shape[-1]
        return wav

    @torch.inference_mode()
    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.codec.check_tokens(tokens).to(self.codec.device)
        return self._run(*self.codec._decoder_inputs(t))

    def silence(self, n_q: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The decoder inputs of digital silence at ``n_q`` stages (:meth:`Generator.silence`)."""
        if n_q not in self._silence:
            with _eval(self.codec.generator):
                latent, symbols = self.codec.generator.silence(n_q)
            self._silence[n_q] = latent.to(self.codec.decode_dtype), symbols
        return self._silence[n_q]

    @torch.inference_mode()
    def decode_packet(self, packet: bytes | None, frames: int | None = None) -> torch.Tensor:
        """A packet (lrac/packets.py), or ``None`` for a lost one -> the audio completed so far
        ``[1, 1, n]``: after the decoder's first packet, ``n`` is the packet's frames times the hop
        (a lost packet stands for ``frames`` frames, default: as many as the last packet had).
        :class:`~lrac.packets.PacketError` for a packet that is not one of this model's."""
        if self.batch_size != 1:
            raise ValueError(f"packets are decoded one stream at a time (batch size 1, this decoder has "
                             f"{self.batch_size})")
        codec = self.codec
        if packet is None:
            frames = self.packet_frames if frames is None else frames
            if not 1 <= frames <= MAX_FRAMES:
                raise ValueError(f"a lost packet stands for 1-{MAX_FRAMES} frames, got {frames}")
            silent_latent, silent_symbols = self.silence(self.n_q)
            latent = silent_latent.new_zeros(1, silent_latent.shape[1], frames)
            symbols = {k: v.new_zeros(1, v.shape[1], frames) for k, v in silent_symbols.items()}
            lost = torch.ones(1, frames, dtype=torch.bool)
        else:
            tokens = torch.from_numpy(PacketFormat.of(codec).unpack(packet))[None].to(codec.device)
            self.n_q, self.packet_frames = tokens.shape[1], tokens.shape[2]
            latent, symbols = codec._decoder_inputs(tokens)
            lost = None
        latent, symbols = conceal(latent, symbols, lost, self.silence(self.n_q), self.conceal,
                                  codec.decoder.missing_latent, codec.decoder.symbol_periods,
                                  self.conceal_state)
        return self._run(latent, symbols)

    @torch.inference_mode()
    def flush(self, length: int | None = None) -> torch.Tensor:
        empty = torch.zeros(self.batch_size, 1, 0, dtype=torch.long, device=self.codec.device)
        with _eval(self.codec.generator):
            wav = self.session.flush(*self.codec._decoder_inputs(empty))
        if length is not None:
            wav = wav[..., : max(0, length - self.emitted)]
        self.emitted += wav.shape[-1]
        return wav


class _eval:
    """Context: module in eval mode, previous mode restored afterwards."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        if self.was_training:  # walking the tree costs more than a streamed chunk: skip if eval
            self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        if self.was_training:
            self.module.train()


def _upgrade_model_config(config: dict[str, Any], version: int) -> dict[str, Any]:
    """A model file's config as today's keys read it: what a file of an earlier format coded by a
    rule its config did not name gets that rule's name: a low band before format 3 the ``uniform``
    layout (t1 version 16), a pitch refinement before format 4 ``uniform`` levels (t1 up to version
    19, t2 up to version 13)."""
    model = config.get("model") if isinstance(config, dict) else None
    frame = model.get("frame") if isinstance(model, dict) else None
    if not isinstance(frame, dict):
        return config
    config = copy.deepcopy(config)
    frame = config["model"]["frame"]
    for key, field, value, since in (("lowband", "layout", "uniform", 3), ("pitch", "fine_levels", "uniform", 4)):
        part = frame.get(key)
        if version < since and isinstance(part, dict) and field not in part:
            part[field] = value
    return config


def model_identity(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> bytes:
    """8 bytes identifying a model: a hash of its config as its file stores it (``repr`` of the
    dict) and of its weights (floating-point tensors as float32, by name)."""
    h = hashlib.sha256(repr(config).encode())
    for key, value in sorted(weights.items()):
        value = value.detach().float() if value.is_floating_point() else value.detach()
        h.update(key.encode())
        h.update(value.cpu().contiguous().numpy().tobytes())
    return h.digest()[:8]


def half_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point tensors of ``state`` as float16 (the others as they are)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        # os.open with 0o666 lets the umask decide the permissions, as a plain open() would
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

"""File-level coding: audio file <-> ``.lrac`` file, one-pass or in streaming chunks.

Long inputs are always coded in streaming chunks, so memory stays bounded whatever the length.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import bitstream
from .audio import load_audio, resample, write_audio
from .bitstream import BitstreamError
from .codec import Codec

# Above this many seconds the default (one-pass) path streams in LONG_CHUNK_S chunks, which keeps
# peak memory near that of a 30 s input (one-pass activations grow with the length).
ONE_PASS_MAX_S = 30.0
LONG_CHUNK_S = 2.0
# Output rates a speech file can sensibly have: below 8 kHz speech is not intelligible, and a
# resampler asked for GHz would run out of memory.
OUTPUT_RATES_HZ = (8000, 384000)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def encode_array(codec: Codec, audio: np.ndarray, bitrate_bps: int, chunk_ms: float | None = None
                 ) -> np.ndarray:
    """Mono ``[T]`` audio at ``codec.sample_rate`` -> indices ``[n_q, frames]``.

    ``chunk_ms`` streams in chunks of that length; without it, one pass (or 2 s chunks past 30 s)."""
    if chunk_ms is None and len(audio) <= ONE_PASS_MAX_S * codec.sample_rate:
        return codec.encode(audio, bitrate_bps)[0].cpu().numpy()
    ms = chunk_ms if chunk_ms is not None else LONG_CHUNK_S * 1000
    size = max(1, int(round(ms * codec.sample_rate / 1000)))
    stream = codec.stream_encoder(bitrate_bps)
    parts = [stream.push(torch.from_numpy(audio[s])) for s in _chunks(len(audio), size)]
    parts.append(stream.flush())
    return torch.cat(parts, dim=-1)[0].cpu().numpy()


def decode_array(codec: Codec, indices: np.ndarray, num_samples: int, chunk_ms: float | None = None
                 ) -> np.ndarray:
    """Indices ``[n_q, frames]`` -> mono ``[num_samples]`` audio at ``codec.sample_rate``."""
    tokens = torch.from_numpy(indices)[None]
    n_frames = tokens.shape[-1]
    if chunk_ms is None and n_frames <= ONE_PASS_MAX_S * codec.frame_rate:
        return codec.decode(tokens, length=num_samples)[0, 0].cpu().numpy()
    ms = chunk_ms if chunk_ms is not None else LONG_CHUNK_S * 1000
    frames = max(1, int(round(ms * codec.frame_rate / 1000)))
    stream = codec.stream_decoder()
    parts = [stream.push(tokens[..., s]) for s in _chunks(n_frames, frames)]
    parts.append(stream.flush(num_samples))
    return torch.cat(parts, dim=-1)[0, 0].cpu().numpy()


def encode_file(codec: Codec, in_path: str | Path, out_path: str | Path, bitrate_bps: int = 6000,
                chunk_ms: float | None = None) -> dict:
    """Audio file (any rate/format soundfile reads; stereo is averaged) -> ``.lrac`` file."""
    n_q = codec.stages_for_bitrate(bitrate_bps)
    start = time.perf_counter()
    audio, _ = load_audio(in_path, codec.sample_rate)
    indices = encode_array(codec, audio, bitrate_bps, chunk_ms)
    header = bitstream.Header(codec.model_id, codec.sample_rate, bitrate_bps, n_q,
                              codec.bits_per_index, indices.shape[-1], len(audio))
    data = bitstream.dumps(header, indices)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    seconds = len(audio) / codec.sample_rate
    return {"seconds": seconds, "frames": header.n_frames, "bytes": len(data),
            "bitrate_bps": bitrate_bps, "elapsed_s": time.perf_counter() - start}


def read_lrac(codec: Codec, path: str | Path) -> tuple[bitstream.Header, np.ndarray]:
    """Read and check a ``.lrac`` file against ``codec``; :class:`BitstreamError` if it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise BitstreamError(f"{path}: file not found")
    header, indices = bitstream.loads(path.read_bytes(), str(path))
    if header.model_id != codec.model_id:
        maker = Codec.pretrained_name_of(header.model_id)
        hint = f"pass --model {maker} (the pretrained model that made it)" if maker else "pass the right --model"
        raise BitstreamError(f"{path}: made by another model (id {header.model_id.hex()}); "
                             f"this model is {codec.model_id.hex()}; {hint}")
    if header.sample_rate != codec.sample_rate or header.bits != codec.bits_per_index:
        raise BitstreamError(f"{path}: header says {header.sample_rate} Hz / {header.bits} bits, "
                             f"model is {codec.sample_rate} Hz / {codec.bits_per_index} bits")
    if header.n_stages > codec.quantizer.n_stages or \
            header.bitrate_bps != codec.bitrate_for_stages(header.n_stages):
        raise BitstreamError(f"{path}: corrupted header ({header.n_stages} stages at "
                             f"{header.bitrate_bps} bit/s)")
    if header.n_frames != math.ceil(header.num_samples / codec.hop_length):
        raise BitstreamError(f"{path}: corrupted header ({header.n_frames} frames for "
                             f"{header.num_samples} samples)")
    return header, indices


def decode_file(codec: Codec, in_path: str | Path, out_path: str | Path, sample_rate: int | None = None,
                chunk_ms: float | None = None) -> dict:
    """``.lrac`` file -> 16-bit PCM wav at ``sample_rate`` (default: the codec's rate, else one of
    :data:`OUTPUT_RATES_HZ`; ``ValueError`` outside them)."""
    start = time.perf_counter()
    rate = sample_rate or codec.sample_rate
    if not OUTPUT_RATES_HZ[0] <= rate <= OUTPUT_RATES_HZ[1]:
        raise ValueError(f"output sample rate must be {OUTPUT_RATES_HZ[0]}-{OUTPUT_RATES_HZ[1]} Hz, got {rate}")
    header, indices = read_lrac(codec, in_path)
    audio = decode_array(codec, indices, header.num_samples, chunk_ms)
    if rate != codec.sample_rate:
        audio = resample(audio, codec.sample_rate, rate)
    write_audio(out_path, audio, rate)
    return {"seconds": header.num_samples / codec.sample_rate, "bitrate_bps": header.bitrate_bps,
            "elapsed_s": time.perf_counter() - start}

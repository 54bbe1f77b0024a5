"""File-level coding: audio file <-> ``.lrac`` file, in memory that does not grow with the length.

Both directions run as a pipeline of blocks: audio is read and resampled block by block
(:class:`lrac.audio.AudioReader`), coded in one pass up to :data:`ONE_PASS_MAX_S` and in streaming
chunks beyond, and written as it comes (:class:`lrac.bitstream.LracWriter`,
:class:`lrac.audio.AudioWriter`); a ``.lrac`` file is checked whole (header, size, checksum, the
model it names) before its first frame is decoded.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import bitstream
from .audio import (OUTPUT_RATES_HZ, AudioReader, AudioWriter, StreamResampler, check_bitstream_path,
                    check_output_path)
from .bitstream import BitstreamError, LracReader
from .codec import Codec
from .packets import MAX_FRAMES, PacketFormat, loss_pattern

# Inputs up to this many seconds are coded in one pass; longer ones stream in LONG_CHUNK_S chunks,
# which keeps peak memory near that of a 30 s input (one-pass activations grow with the length).
ONE_PASS_MAX_S = 30.0
LONG_CHUNK_S = 2.0

Progress = Callable[[float, float], None]   # (seconds of audio done, seconds in all)


def rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The blocks' concatenation along the last axis, cut into pieces of ``size`` (the last one
    shorter); holds at most one block and one piece at a time."""
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += block.shape[-1]
        if held >= size:
            joined = np.concatenate(pending, axis=-1)
            whole = held - held % size
            for start in range(0, whole, size):
                yield joined[..., start:start + size]
            pending, held = [joined[..., whole:]], held - whole
    if held:
        yield np.concatenate(pending, axis=-1)


def _one_pass_or_stream(blocks: Iterable[np.ndarray], limit: int) -> tuple[np.ndarray | None, Iterator]:
    """``(whole, None)`` when the blocks hold at most ``limit`` samples/frames, else
    ``(None, all blocks)`` (the ones read so far included)."""
    head, held = [], 0
    it = iter(blocks)
    for block in it:
        head.append(block)
        held += block.shape[-1]
        if held > limit:
            return None, itertools.chain(head, it)
    return (np.concatenate(head, axis=-1) if head else None), iter(())


def encode_blocks(codec: Codec, blocks: Iterable[np.ndarray], bitrate_bps: int,
                  chunk_ms: float | None = None) -> Iterator[np.ndarray]:
    """Mono audio blocks ``[n]`` at ``codec.sample_rate`` -> token frames ``[n_q, f]``, in order.

    ``chunk_ms`` streams in chunks of that length; without it, one pass up to
    :data:`ONE_PASS_MAX_S`, else :data:`LONG_CHUNK_S` chunks (the tokens are the same).
    ``codec`` may also be the ONNX engine (:class:`lrac.runtime.OnnxCodec`, numpy in and out), which
    always streams."""
    onnx = not isinstance(codec, Codec)
    if chunk_ms is None and not onnx:
        whole, blocks = _one_pass_or_stream(blocks, int(ONE_PASS_MAX_S * codec.sample_rate))
        if whole is not None:
            yield codec.encode(whole, bitrate_bps)[0].cpu().numpy()
            return
    ms = chunk_ms if chunk_ms is not None else LONG_CHUNK_S * 1000
    stream = codec.stream_encoder(bitrate_bps)
    for chunk in rechunk(blocks, max(1, int(round(ms * codec.sample_rate / 1000)))):
        yield stream.push(chunk) if onnx else stream.push(torch.from_numpy(chunk))[0].cpu().numpy()
    yield stream.flush() if onnx else stream.flush()[0].cpu().numpy()


def decode_blocks(codec: Codec, blocks: Iterable[np.ndarray], num_samples: int,
                  chunk_ms: float | None = None) -> Iterator[np.ndarray]:
    """Token frames ``[n_q, f]`` -> mono audio blocks ``[n]`` at ``codec.sample_rate``, cropped to
    ``num_samples`` in all (one pass up to :data:`ONE_PASS_MAX_S`, else streaming chunks; the ONNX
    engine always streams)."""
    onnx = not isinstance(codec, Codec)
    if chunk_ms is None and not onnx:
        whole, blocks = _one_pass_or_stream(blocks, int(ONE_PASS_MAX_S * codec.frame_rate))
        if whole is not None:
            yield codec.decode(torch.from_numpy(whole)[None], length=num_samples)[0, 0].cpu().numpy()
            return
    ms = chunk_ms if chunk_ms is not None else LONG_CHUNK_S * 1000
    stream = codec.stream_decoder()
    emitted = 0
    for chunk in rechunk(blocks, max(1, int(round(ms * codec.frame_rate / 1000)))):
        wav = stream.push(chunk) if onnx else stream.push(torch.from_numpy(chunk)[None])[0, 0].cpu().numpy()
        wav = wav[: num_samples - emitted]
        emitted += len(wav)
        yield wav
    tail = stream.flush(num_samples) if onnx else stream.flush(num_samples)[0, 0].cpu().numpy()
    yield tail[: num_samples - emitted]


def encode_array(codec: Codec, audio: np.ndarray, bitrate_bps: int, chunk_ms: float | None = None
                 ) -> np.ndarray:
    """Mono ``[T]`` audio at ``codec.sample_rate`` -> indices ``[n_q, frames]`` (as the file path)."""
    return np.concatenate(list(encode_blocks(codec, [np.asarray(audio, np.float32)], bitrate_bps,
                                             chunk_ms)), axis=-1)


def decode_array(codec: Codec, indices: np.ndarray, num_samples: int, chunk_ms: float | None = None
                 ) -> np.ndarray:
    """Indices ``[n_q, frames]`` -> mono ``[num_samples]`` audio at ``codec.sample_rate``."""
    return np.concatenate(list(decode_blocks(codec, [np.asarray(indices)], num_samples, chunk_ms)))


@dataclass(frozen=True)
class LossSimulation:
    """Packets to drop when decoding (``lrac-decode --simulate-loss``): ``loss_pct`` % of packets of
    ``packet_ms``, independently (``burst`` 1) or in bursts of ``burst`` packets on average
    (:func:`lrac.packets.loss_pattern`), drawn with ``seed``; ``conceal`` names the concealment
    (None: the model's default)."""

    loss_pct: float
    burst: float = 1.0
    seed: int = 0
    packet_ms: float = 20.0
    conceal: str | None = None


def packet_frames(codec: Codec, packet_ms: float) -> int:
    """Frames in a packet of ``packet_ms``; ``ValueError`` unless it is 1-4 whole frames."""
    frames = packet_ms * codec.frame_rate / 1000
    if not (math.isfinite(frames) and frames.is_integer() and 1 <= frames <= MAX_FRAMES):
        raise ValueError(f"packets are 1-{MAX_FRAMES} frames of {1000 / codec.frame_rate:g} ms, "
                         f"got {packet_ms:g} ms")
    return int(frames)


def lost_packets(codec: Codec, n_frames: int, loss: LossSimulation) -> np.ndarray:
    """Which packets of ``n_frames`` frames ``loss`` drops: bool ``[packets]`` (one byte a packet:
    1.8 MB for 10 hours of 20 ms packets)."""
    frames = packet_frames(codec, loss.packet_ms)
    return loss_pattern(-(-n_frames // frames), loss.loss_pct, loss.burst, loss.seed)


def decode_blocks_with_loss(codec: Codec, blocks: Iterable[np.ndarray], num_samples: int,
                            loss: LossSimulation, lost: np.ndarray) -> Iterator[np.ndarray]:
    """Token frames ``[n_q, f]`` cut into packets (lrac/packets.py), those ``lost`` (from
    :func:`lost_packets`) dropped and the rest decoded with concealment -> mono audio blocks ``[n]``,
    ``num_samples`` in all; memory does not grow with the length."""
    fmt = PacketFormat.of(codec)
    stream = codec.stream_decoder(conceal=loss.conceal)
    emitted = 0
    pieces = rechunk(blocks, packet_frames(codec, loss.packet_ms))
    for piece, gone in zip(pieces, lost, strict=True):
        packet = None if gone else fmt.pack(piece)
        wav = stream.decode_packet(packet, piece.shape[-1])[0, 0].cpu().numpy()[: num_samples - emitted]
        emitted += len(wav)
        yield wav
    yield stream.flush(num_samples)[0, 0].cpu().numpy()[: num_samples - emitted]


def decode_with_loss(codec: Codec, indices: np.ndarray, num_samples: int, loss: LossSimulation
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``[n_q, frames]`` decoded as packets, some lost (:func:`decode_blocks_with_loss`)
    -> ``(audio [num_samples], lost [packets] bool)``."""
    lost = lost_packets(codec, indices.shape[-1], loss)
    blocks = decode_blocks_with_loss(codec, [np.asarray(indices)], num_samples, loss, lost)
    return np.concatenate(list(blocks)), lost


def encode_file(codec: Codec, in_path: str | Path, out_path: str | Path, bitrate_bps: int = 6000,
                chunk_ms: float | None = None, progress: Progress | None = None) -> dict:
    """Audio file (any rate/format soundfile reads; stereo is averaged) -> ``.lrac`` file.

    Written to a temporary file beside ``out_path`` and renamed when complete: an error part-way
    (NaN samples at hour 3) leaves no file. ``progress(done_s, total_s)`` is called per block."""
    n_q = codec.stages_for_bitrate(bitrate_bps)
    start = time.perf_counter()
    out_path = check_bitstream_path(out_path, in_path)
    with AudioReader(in_path, codec.sample_rate) as reader:
        limit = bitstream.MAX_SAMPLES
        if reader.num_samples > limit:
            raise ValueError(f"{in_path}: {reader.num_samples / codec.sample_rate / 3600:.1f} h, longer than "
                             f"an .lrac file holds ({limit / codec.sample_rate / 3600:.1f} h); split it")
        total_s = reader.num_samples / codec.sample_rate
        count = 0

        def counted() -> Iterator[np.ndarray]:
            nonlocal count
            for block in reader.blocks():
                count += len(block)
                if count > limit:
                    raise ValueError(f"{in_path}: longer than an .lrac file holds ({limit} samples)")
                if progress:
                    progress(count / codec.sample_rate, total_s)
                yield block

        out_path.parent.mkdir(parents=True, exist_ok=True)
        with bitstream.LracWriter(out_path, codec.model_id, codec.sample_rate, bitrate_bps, n_q,
                                  codec.bits_per_index) as writer:
            for indices in encode_blocks(codec, counted(), bitrate_bps, chunk_ms):
                writer.write(indices)
            header = writer.close(count)
    seconds = count / codec.sample_rate
    n_bytes = bitstream.HEADER_BYTES + bitstream.payload_bytes(header.n_frames, n_q, header.bits)
    return {"seconds": seconds, "frames": header.n_frames, "bytes": n_bytes,
            "bitrate_bps": bitrate_bps, "elapsed_s": time.perf_counter() - start}


def check_header(codec: Codec, header: bitstream.Header, name: str) -> None:
    """Refuse a ``.lrac`` header that ``codec`` cannot decode (another model, rate, bitrate, or
    frames that do not match the length) with a :class:`BitstreamError`."""
    if header.model_id != codec.model_id:
        maker = Codec.pretrained_name_of(header.model_id)
        hint = f"pass --model {maker} (the pretrained model that made it)" if maker else "pass the right --model"
        raise BitstreamError(f"{name}: made by another model (id {header.model_id.hex()}); "
                             f"this model is {codec.model_id.hex()}; {hint}")
    if header.sample_rate != codec.sample_rate or header.bits != codec.bits_per_index:
        raise BitstreamError(f"{name}: header says {header.sample_rate} Hz / {header.bits} bits, "
                             f"model is {codec.sample_rate} Hz / {codec.bits_per_index} bits")
    if header.bitrate_bps not in codec.bitrates_bps or \
            header.bitrate_bps != codec.bitrate_for_stages(header.n_stages):
        valid = ", ".join(str(b) for b in codec.bitrates_bps)
        raise BitstreamError(f"{name}: corrupted header ({header.n_stages} stages at "
                             f"{header.bitrate_bps} bit/s; this model codes {valid} bit/s)")
    if header.n_frames != math.ceil(header.num_samples / codec.hop_length):
        raise BitstreamError(f"{name}: corrupted header ({header.n_frames} frames for "
                             f"{header.num_samples} samples)")


def open_lrac(codec: Codec, path: str | Path) -> LracReader:
    """A ``.lrac`` file opened for block reading and checked whole against ``codec`` (header,
    size, checksum, model); :class:`BitstreamError` if it does not fit. Close it (``with``)."""
    reader = LracReader(path)
    try:
        check_header(codec, reader.header, str(path))
    except BaseException:
        reader.close()
        raise
    return reader


def read_lrac(codec: Codec, path: str | Path) -> tuple[bitstream.Header, np.ndarray]:
    """Read and check a whole ``.lrac`` file against ``codec`` -> ``(header, indices [n_q, F])``."""
    with open_lrac(codec, path) as reader:
        return reader.header, np.concatenate(list(reader.blocks()), axis=-1)


def decode_file(codec: Codec, in_path: str | Path, out_path: str | Path, sample_rate: int | None = None,
                chunk_ms: float | None = None, progress: Progress | None = None,
                loss: LossSimulation | None = None) -> dict:
    """``.lrac`` file -> 16-bit PCM ``.wav`` / ``.flac`` at ``sample_rate`` (default: the codec's,
    else one of :data:`OUTPUT_RATES_HZ`; ``ValueError`` outside them).

    Written as it is decoded, to a temporary file renamed when complete. ``progress(done_s,
    total_s)`` is called per chunk. ``loss``: decode as packets, some of them lost
    (:func:`decode_blocks_with_loss`; not with ``chunk_ms``: the packets are the chunks); the
    result then says how many."""
    start = time.perf_counter()
    rate = sample_rate or codec.sample_rate
    if not OUTPUT_RATES_HZ[0] <= rate <= OUTPUT_RATES_HZ[1]:
        raise ValueError(f"output sample rate must be {OUTPUT_RATES_HZ[0]}-{OUTPUT_RATES_HZ[1]} Hz, got {rate}")
    if loss is not None and chunk_ms is not None:
        raise ValueError("chunk_ms and a packet loss simulation do not go together (packets are the chunks)")
    check_output_path(out_path, source=in_path)
    with open_lrac(codec, in_path) as reader:
        header = reader.header
        total_s = header.num_samples / codec.sample_rate
        if math.ceil(header.num_samples * rate / codec.sample_rate) > bitstream.MAX_SAMPLES:
            raise ValueError(f"{in_path}: {total_s / 3600:.1f} h at {rate} Hz is more than a 16-bit "
                             f"WAV holds; pick a lower --sample-rate")
        lost = None
        if loss is None:
            blocks = decode_blocks(codec, reader.blocks(), header.num_samples, chunk_ms)
        else:
            lost = lost_packets(codec, header.n_frames, loss)
            blocks = decode_blocks_with_loss(codec, reader.blocks(), header.num_samples, loss, lost)
        resampler = StreamResampler(codec.sample_rate, rate)
        done = 0
        with AudioWriter(out_path, rate) as writer:
            for audio in blocks:
                writer.write(resampler.push(audio))
                done += len(audio)
                if progress:
                    progress(done / codec.sample_rate, total_s)
            writer.write(resampler.flush())
            writer.close()
    out = {"seconds": total_s, "bitrate_bps": header.bitrate_bps, "elapsed_s": time.perf_counter() - start}
    if lost is not None:
        out.update(packets=len(lost), lost_packets=int(lost.sum()))
    return out

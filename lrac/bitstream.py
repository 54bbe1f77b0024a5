"""The ``.lrac`` file: a 32-byte header, then the token indices packed at ``bits`` bits each.

Header (little-endian)::

    offset size field
         0    4 magic            b"LRAC"
         4    1 version          1
         5    1 bits << 4 | n_q  bits per index (1..15), RVQ stages used (1..15)
         6    8 model_id         first 8 bytes of the model's SHA-256 (see Codec.compute_model_id)
        14    4 sample_rate      Hz
        18    2 bitrate_bps      n_q * bits * frame_rate
        20    4 n_frames         token frames
        24    4 num_samples      original length in samples (decoder crops to it)
        28    4 crc32            CRC-32 of header bytes 0..27 followed by the payload

Payload: indices in frame-major order (frame 0 stages 0..n_q-1, frame 1, ...), each written MSB
first, the last byte zero-padded. File size = 32 + ceil(n_frames * n_q * bits / 8) bytes.
What an index means is the model's business: with the frame family's pitch path, the low 3 bits of
each frame's stage-0 index are the pitch code (lrac/quant/rvq.py, "Side bits").
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"LRAC"
VERSION = 1
_HEADER = struct.Struct("<4sBB8sIHIII")
HEADER_BYTES = _HEADER.size  # 32
assert HEADER_BYTES == 32


class BitstreamError(ValueError):
    """A ``.lrac`` file that cannot be decoded; the message says why in one line."""


@dataclass(frozen=True)
class Header:
    model_id: bytes
    sample_rate: int
    bitrate_bps: int
    n_stages: int
    bits: int
    n_frames: int
    num_samples: int
    version: int = VERSION


def payload_bytes(n_frames: int, n_stages: int, bits: int) -> int:
    return (n_frames * n_stages * bits + 7) // 8


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Indices ``[n_q, F]`` (ints in ``0..2**bits-1``) -> bytes, frame-major, MSB first."""
    flat = np.ascontiguousarray(np.asarray(indices, dtype=np.int64).T).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << bits):
        raise BitstreamError(f"index out of range for {bits}-bit packing")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_array = ((flat[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bit_array).tobytes()


def unpack_indices(data: bytes, n_stages: int, n_frames: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_indices` -> ``[n_q, F]`` int64."""
    count = n_stages * n_frames
    bit_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    flat = bit_array.reshape(count, bits).astype(np.int64) @ weights
    return flat.reshape(n_frames, n_stages).T.copy()


def dumps(header: Header, indices: np.ndarray) -> bytes:
    """Serialise a header and indices ``[n_q, F]`` to the bytes of a ``.lrac`` file."""
    indices = np.asarray(indices)
    if indices.shape != (header.n_stages, header.n_frames):
        raise BitstreamError(f"indices shape {indices.shape} != ({header.n_stages}, {header.n_frames})")
    if not (1 <= header.bits <= 15 and 1 <= header.n_stages <= 15):
        raise BitstreamError(f"bits {header.bits} / stages {header.n_stages} must be in 1..15")
    head = _HEADER.pack(MAGIC, header.version, header.bits << 4 | header.n_stages, header.model_id,
                        header.sample_rate, header.bitrate_bps, header.n_frames, header.num_samples, 0)
    payload = pack_indices(indices, header.bits)
    crc = zlib.crc32(payload, zlib.crc32(head[:28]))
    return head[:28] + struct.pack("<I", crc) + payload


def read_header(data: bytes, name: str = "input") -> Header:
    """The header of ``.lrac`` bytes (the first 32 are enough); :class:`BitstreamError` if it is
    not one. The payload's length and checksum are :func:`loads`' to check."""
    if len(data) < HEADER_BYTES:
        if data[: len(MAGIC)] != MAGIC[: len(data)] or not data:
            raise BitstreamError(f"{name}: not an .lrac file (bad magic)")
        raise BitstreamError(f"{name}: truncated .lrac file ({len(data)} bytes, header needs 32)")
    magic, version, packed, model_id, rate, bitrate, n_frames, num_samples, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError(f"{name}: not an .lrac file (bad magic)")
    if version != VERSION:
        raise BitstreamError(f"{name}: .lrac version {version} not supported (this lrac reads {VERSION})")
    bits, n_stages = packed >> 4, packed & 15
    if bits == 0 or n_stages == 0:
        raise BitstreamError(f"{name}: corrupted header (bits {bits}, stages {n_stages})")
    return Header(model_id, rate, bitrate, n_stages, bits, n_frames, num_samples, version)


def loads(data: bytes, name: str = "input") -> tuple[Header, np.ndarray]:
    """Parse ``.lrac`` bytes -> ``(header, indices [n_q, F])``; :class:`BitstreamError` if invalid."""
    header = read_header(data, name)
    expected = HEADER_BYTES + payload_bytes(header.n_frames, header.n_stages, header.bits)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise BitstreamError(f"{name}: {what}: {len(data)} bytes, header says {expected}")
    payload = data[HEADER_BYTES:]
    crc = struct.unpack_from("<I", data, 28)[0]
    if zlib.crc32(payload, zlib.crc32(data[:28])) != crc:
        raise BitstreamError(f"{name}: corrupted (checksum mismatch)")
    return header, unpack_indices(payload, header.n_stages, header.n_frames, header.bits)

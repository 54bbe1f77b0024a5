"""The ``.lrac`` file: a 32-byte header, then the token indices packed at ``bits`` bits each.

Header (little-endian)::

    offset size field
         0    4 magic            b"LRAC"
         4    1 version          1
         5    1 bits << 4 | n_q  bits per index (1..15), RVQ stages used (1..15)
         6    8 model_id         first 8 bytes of the model's SHA-256 (see Codec.compute_model_id)
        14    4 sample_rate      Hz
        18    2 bitrate_bps      n_q * bits * frame_rate
        20    4 n_frames         token frames (at least 1)
        24    4 num_samples      original length in samples (decoder crops to it), 1..MAX_SAMPLES
        28    4 crc32            CRC-32 of header bytes 0..27 followed by the payload

Payload: indices in frame-major order (frame 0 stages 0..n_q-1, frame 1, ...), each written MSB
first, the last byte zero-padded. File size = 32 + ceil(n_frames * n_q * bits / 8) bytes.
What an index means is the model's business: with the frame family's pitch path, the low 3 bits of
each frame's stage-0 index are the pitch code (lrac/quant/rvq.py, "Side bits").

Files of any length are written (:class:`LracWriter`) and read (:class:`LracReader`) in blocks of
frames, so memory does not grow with the length; a reader checks the header against the file's
size and the checksum before it returns a single index.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

MAGIC = b"LRAC"
VERSION = 1
_HEADER = struct.Struct("<4sBB8sIHIII")
HEADER_BYTES = _HEADER.size  # 32
assert HEADER_BYTES == 32
# A 16-bit mono WAV holds less than 2^31 samples (4 GiB): the longest audio a file may carry
# (24.8 hours at 24 kHz), so that every valid file can be decoded to one.
MAX_SAMPLES = 2**31 - 2**16
# Frames packed or unpacked at a time: a multiple of 8, so that every block is whole bytes.
BLOCK_FRAMES = 4096
_READ_BYTES = 1 << 20   # checksum pass: bytes read at a time


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
    """Indices ``[n_q, F]`` (ints in ``0..2**bits-1``) -> bytes, frame-major, MSB first.

    Temporary memory: one byte per bit."""
    flat = np.ascontiguousarray(np.asarray(indices).T).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << bits):
        raise BitstreamError(f"index out of range for {bits}-bit packing")
    flat = flat.astype(np.uint16)
    bit_matrix = np.empty((flat.size, bits), dtype=np.uint8)
    for b in range(bits):
        bit_matrix[:, b] = (flat >> (bits - 1 - b)) & 1
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_indices(data: bytes, n_stages: int, n_frames: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_indices` -> ``[n_q, F]`` int64. Temporary memory: one byte per bit."""
    count = n_stages * n_frames
    bit_matrix = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits).reshape(count, bits)
    flat = np.zeros(count, dtype=np.int64)
    for b in range(bits):
        flat = (flat << 1) | bit_matrix[:, b]
    return flat.reshape(n_frames, n_stages).T.copy()


def _check_fields(header: Header) -> None:
    if not (1 <= header.bits <= 15 and 1 <= header.n_stages <= 15):
        raise BitstreamError(f"bits {header.bits} / stages {header.n_stages} must be in 1..15")


def pack_header(header: Header, crc: int = 0) -> bytes:
    """The 32 header bytes (``crc`` in the last four)."""
    _check_fields(header)
    if not 1 <= header.num_samples <= MAX_SAMPLES:
        raise BitstreamError(f"{header.num_samples} samples: an .lrac file holds 1 to {MAX_SAMPLES}")
    try:
        return _HEADER.pack(MAGIC, header.version, header.bits << 4 | header.n_stages, header.model_id,
                            header.sample_rate, header.bitrate_bps, header.n_frames, header.num_samples, crc)
    except struct.error as exc:   # a field too large for its bytes
        raise BitstreamError(f"header field out of range ({exc})") from None


def dumps(header: Header, indices: np.ndarray) -> bytes:
    """Serialise a header and indices ``[n_q, F]`` to the bytes of a ``.lrac`` file."""
    indices = np.asarray(indices)
    if indices.shape != (header.n_stages, header.n_frames):
        raise BitstreamError(f"indices shape {indices.shape} != ({header.n_stages}, {header.n_frames})")
    head = pack_header(header)[:28]
    payload = pack_indices(indices, header.bits)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def read_header(data: bytes, name: str = "input") -> Header:
    """The header of ``.lrac`` bytes (the first 32 are enough); :class:`BitstreamError` if it is
    not one. The payload's length and checksum are :func:`loads`' (:class:`LracReader`'s) to check."""
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
    if n_frames == 0 or num_samples == 0:
        raise BitstreamError(f"{name}: holds no audio ({n_frames} frames, {num_samples} samples)")
    if num_samples > MAX_SAMPLES:
        raise BitstreamError(f"{name}: header says {num_samples} samples, more than an .lrac file "
                             f"holds ({MAX_SAMPLES})")
    return Header(model_id, rate, bitrate, n_stages, bits, n_frames, num_samples, version)


def _check_size(header: Header, size: int, name: str) -> None:
    expected = HEADER_BYTES + payload_bytes(header.n_frames, header.n_stages, header.bits)
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise BitstreamError(f"{name}: {what}: {size} bytes, header says {expected}")


def loads(data: bytes, name: str = "input") -> tuple[Header, np.ndarray]:
    """Parse ``.lrac`` bytes -> ``(header, indices [n_q, F])``; :class:`BitstreamError` if invalid."""
    header = read_header(data, name)
    _check_size(header, len(data), name)
    view = memoryview(data)
    if zlib.crc32(view[HEADER_BYTES:], zlib.crc32(view[:28])) != struct.unpack_from("<I", data, 28)[0]:
        raise BitstreamError(f"{name}: corrupted (checksum mismatch)")
    indices = np.empty((header.n_stages, header.n_frames), dtype=np.int64)
    block_bytes = BLOCK_FRAMES * header.n_stages * header.bits // 8
    for k, start in enumerate(range(0, header.n_frames, BLOCK_FRAMES)):
        frames = min(BLOCK_FRAMES, header.n_frames - start)
        chunk = view[HEADER_BYTES + k * block_bytes: HEADER_BYTES + (k + 1) * block_bytes]
        indices[:, start:start + frames] = unpack_indices(chunk, header.n_stages, frames, header.bits)
    return header, indices


class LracReader:
    """A ``.lrac`` file opened for reading in blocks: header, size and checksum are checked on
    opening, before any index is unpacked (and before the payload is read for the indices).

    Usage::

        with LracReader(path) as reader:
            for indices in reader.blocks():   # [n_q, <= BLOCK_FRAMES] int64
                ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise BitstreamError(f"{path}: file not found")
        self.file = open(self.path, "rb")
        try:
            self.header = read_header(self.file.read(HEADER_BYTES), self.name)
            _check_size(self.header, os.fstat(self.file.fileno()).st_size, self.name)
            self._check_crc()
        except BaseException:
            self.file.close()
            raise

    def _check_crc(self) -> None:
        self.file.seek(0)
        head = self.file.read(HEADER_BYTES)
        crc = zlib.crc32(head[:28])
        while piece := self.file.read(_READ_BYTES):
            crc = zlib.crc32(piece, crc)
        if crc != struct.unpack_from("<I", head, 28)[0]:
            raise BitstreamError(f"{self.name}: corrupted (checksum mismatch)")

    def blocks(self) -> Iterator[np.ndarray]:
        """Indices ``[n_q, f]`` (int64) of up to :data:`BLOCK_FRAMES` frames at a time, in order."""
        h = self.header
        self.file.seek(HEADER_BYTES)
        for start in range(0, h.n_frames, BLOCK_FRAMES):
            frames = min(BLOCK_FRAMES, h.n_frames - start)
            data = self.file.read(payload_bytes(frames, h.n_stages, h.bits))
            yield unpack_indices(data, h.n_stages, frames, h.bits)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "LracReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LracWriter:
    """Write a ``.lrac`` file block by block: frames go to a temporary file beside ``path``, which
    :meth:`close` completes (header, checksum) and renames to ``path``; on an error (leaving the
    ``with`` block by an exception) the temporary file is removed and ``path`` is left as it was.

    Usage::

        with LracWriter(path, header_fields...) as writer:
            writer.write(indices)            # [n_q, f], any f
            header = writer.close(num_samples)
    """

    def __init__(self, path: str | Path, model_id: bytes, sample_rate: int, bitrate_bps: int,
                 n_stages: int, bits: int) -> None:
        self.path = Path(path)
        self.header = Header(model_id, sample_rate, bitrate_bps, n_stages, bits, 0, 1)
        _check_fields(self.header)
        self.tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        self.file = open(self.tmp, "wb")
        self.file.write(bytes(HEADER_BYTES))
        self.pending = np.zeros((n_stages, 0), dtype=np.int64)   # < 8 frames: not yet whole bytes
        self.n_frames = 0

    def write(self, indices: np.ndarray) -> None:
        """Append frames ``[n_q, f]``."""
        indices = np.asarray(indices)
        if indices.ndim != 2 or indices.shape[0] != self.header.n_stages:
            raise BitstreamError(f"indices shape {indices.shape}: expected ({self.header.n_stages}, frames)")
        self.n_frames += indices.shape[1]
        frames = np.concatenate([self.pending, indices], axis=1)
        whole = frames.shape[1] - frames.shape[1] % 8
        for start in range(0, whole, BLOCK_FRAMES):
            self.file.write(pack_indices(frames[:, start:min(whole, start + BLOCK_FRAMES)], self.header.bits))
        self.pending = frames[:, whole:]

    def close(self, num_samples: int) -> Header:
        """Finish the file for ``num_samples`` of audio; returns its header."""
        self.file.write(pack_indices(self.pending, self.header.bits))
        header = Header(self.header.model_id, self.header.sample_rate, self.header.bitrate_bps,
                        self.header.n_stages, self.header.bits, self.n_frames, num_samples)
        head = pack_header(header)[:28]
        self.file.flush()
        with open(self.tmp, "rb") as f:   # the checksum covers the header: computed once it is known
            f.seek(HEADER_BYTES)
            crc = zlib.crc32(head)
            while piece := f.read(_READ_BYTES):
                crc = zlib.crc32(piece, crc)
        self.file.seek(0)
        self.file.write(head + struct.pack("<I", crc))
        self.file.close()
        os.replace(self.tmp, self.path)
        self.header = header
        return header

    def abort(self) -> None:
        self.file.close()
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "LracWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.file.closed or exc_type is not None:
            self.abort()

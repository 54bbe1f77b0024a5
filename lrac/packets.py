"""Packets for real-time transport, and the loss patterns that test them.

A packet carries 1-4 token frames (10-40 ms at 100 frames/s) at one bitrate, after one
table-of-contents byte, as an Opus packet does (RFC 6716, section 3.1)::

    byte 0   TOC   bits 7-4  model tag: the model id's 16 nibbles XOR-ed (:func:`model_tag`)
                   bits 3-2  mode: the index of the bitrate in ``codec.bitrates_bps`` (0: 1 kbps, 1: 6 kbps)
                   bits 1-0  frames - 1
    bytes 1- payload: the frames' tokens as in a ``.lrac`` file (lrac/bitstream.py): frame-major,
                   ``bits`` bits per token, most significant bit first, zero bits up to a whole byte

A packet of ``f`` frames of ``n_q`` tokens is ``1 + ceil(f * n_q * bits / 8)`` bytes: 4 bytes per 20 ms
at 1 kbps (1.6 kbit/s on the wire), 16 at 6 kbps (6.4 kbit/s). There is no checksum (the transport has
one), but the length must be exact and the padding bits zero. The session that carries the packets
names the model (the ``.lrac`` header does, or the application's signalling, as SDP does for Opus);
the tag then catches a packet from another model 15 times in 16, and a stream of them at once.

Loss patterns (:func:`loss_pattern`): independent losses, or Gilbert-Elliott bursts (a two-state
Markov chain that loses every packet in its bad state) with a given mean burst length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bitstream import BitstreamError, pack_indices, payload_bytes, unpack_indices

MAX_FRAMES = 4      # frames per packet (2 bits of the TOC)
MAX_MODES = 4       # bitrates a packet can name (2 bits of the TOC)
TAG_BITS = 4


class PacketError(BitstreamError):
    """A packet that cannot be decoded; the message says why in one line."""


def model_tag(model_id: bytes) -> int:
    """A packet's 4-bit model tag: the XOR of the model id's nibbles, so that every bit of the id
    counts (the first byte's high nibble alone gave t1 version 17 and t2 version 13 the same tag)."""
    tag = 0
    for byte in model_id:
        tag ^= byte >> TAG_BITS ^ byte & ((1 << TAG_BITS) - 1)
    return tag


@dataclass(frozen=True)
class PacketFormat:
    """What a model's packets look like: its tag, the stages of each mode, bits per token.

    Build it with :meth:`of`; :meth:`pack` and :meth:`unpack` convert tokens ``[n_q, frames]``."""

    tag: int
    stages: tuple[int, ...]      # stages (tokens per frame) of mode 0, 1, ...
    bitrates_bps: tuple[int, ...]
    bits: int

    @classmethod
    def of(cls, codec) -> "PacketFormat":
        """The packet format of a :class:`lrac.Codec`."""
        rates = tuple(codec.bitrates_bps)
        if len(rates) > MAX_MODES:
            raise ValueError(f"a packet names one of {MAX_MODES} bitrates; this codec has {len(rates)}")
        return cls(model_tag(codec.model_id), tuple(codec.stages_for_bitrate(b) for b in rates),
                   rates, codec.bits_per_index)

    @staticmethod
    def frames_in(packet: bytes) -> int:
        """The frame count a packet's TOC byte gives (checked by :meth:`unpack`, not here)."""
        return (packet[0] & 3) + 1

    def packet_bytes(self, frames: int, mode: int) -> int:
        return 1 + payload_bytes(frames, self.stages[mode], self.bits)

    def pack(self, tokens: np.ndarray) -> bytes:
        """Tokens ``[n_q, frames]`` (1-4 frames; ``n_q`` the stages of one of the modes) -> a packet."""
        tokens = np.asarray(tokens)
        n_q, frames = tokens.shape
        if n_q not in self.stages:
            raise PacketError(f"{n_q} tokens per frame is none of this model's modes "
                              f"(stages {list(self.stages)})")
        if not 1 <= frames <= MAX_FRAMES:
            raise PacketError(f"a packet carries 1-{MAX_FRAMES} frames, got {frames}")
        toc = self.tag << 4 | self.stages.index(n_q) << 2 | (frames - 1)
        return bytes([toc]) + pack_indices(tokens, self.bits)

    def unpack(self, packet: bytes) -> np.ndarray:
        """A packet -> tokens ``[n_q, frames]`` int64; :class:`PacketError` for anything else: empty,
        another model's, an unknown mode, a wrong length or nonzero padding."""
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            raise PacketError(f"a packet is bytes, got {type(packet).__name__}")
        packet = bytes(packet)
        if not packet:
            raise PacketError("empty packet (0 bytes; a packet is a TOC byte and 1-4 frames)")
        toc = packet[0]
        tag, mode, frames = toc >> 4, toc >> 2 & 3, (toc & 3) + 1
        if tag != self.tag:
            raise PacketError(f"packet of another model (tag {tag}, this model's is {self.tag})")
        if mode >= len(self.stages):
            modes = ", ".join(f"{m} ({b} bit/s)" for m, b in enumerate(self.bitrates_bps))
            raise PacketError(f"packet mode {mode} is not one of this model's: {modes}")
        size = self.packet_bytes(frames, mode)
        if len(packet) != size:
            raise PacketError(f"a packet of {frames} frame(s) at {self.bitrates_bps[mode]} bit/s is "
                              f"{size} bytes, got {len(packet)}")
        n_q = self.stages[mode]
        padding = 8 * (size - 1) - frames * n_q * self.bits
        if padding and packet[-1] & ((1 << padding) - 1):
            raise PacketError("nonzero padding bits (a corrupted packet, or another model's)")
        return unpack_indices(packet[1:], n_q, frames, self.bits)


def loss_pattern(n_packets: int, loss_pct: float, burst: float = 1.0,
                 rng: np.random.Generator | int = 0) -> np.ndarray:
    """Which of ``n_packets`` packets are lost: bool ``[n_packets]``, about ``loss_pct`` % of them.

    ``burst`` <= 1: each packet is lost independently. ``burst`` > 1: Gilbert-Elliott losses, a
    good and a bad state, every packet lost in the bad one; the bad state lasts ``burst`` packets
    on average (leaves it with probability ``1 / burst``) and is entered with the probability that
    makes ``loss_pct`` % of the time bad. The first state is drawn from that share. ``rng``: a numpy
    generator or a seed."""
    if not 0 <= loss_pct < 100:
        raise ValueError(f"packet loss must be 0-100 % (less than 100), got {loss_pct:g}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    share = loss_pct / 100
    draws = rng.random(n_packets)
    if burst <= 1:
        return draws < share
    leave = 1 / burst
    enter = share * leave / (1 - share)
    lost = np.zeros(n_packets, dtype=bool)
    bad = rng.random() < share
    for i in range(n_packets):
        lost[i] = bad
        bad = draws[i] >= leave if bad else draws[i] < enter
    return lost


def erasure_mask(batch: int, n_frames: int, share: float, loss_pct: float, burst: float,
                 packet_frames: int, rng: np.random.Generator) -> np.ndarray | None:
    """Training erasures: bool ``[batch, n_frames]``, True where a frame is lost, or None when no
    chunk lost any. A ``share`` of the chunks loses packets of ``packet_frames`` frames at
    ``loss_pct`` %, half of them independently and half in bursts of ``burst`` packets on average."""
    mask = np.zeros((batch, n_frames), dtype=bool)
    n_packets = -(-n_frames // packet_frames)
    for row in np.flatnonzero(rng.random(batch) < share):
        packets = loss_pattern(n_packets, loss_pct, burst if rng.random() < 0.5 else 1.0, rng)
        mask[row] = np.repeat(packets, packet_frames)[:n_frames]
    return mask if mask.any() else None

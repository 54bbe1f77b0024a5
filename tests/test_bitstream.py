"""The .lrac format: round trip, exact size, and fuzzing (never an uncaught exception, never a hang)."""

import math
import random
import time

import numpy as np
import pytest

from lrac import bitstream
from lrac.bitstream import HEADER_BYTES, BitstreamError, Header


def _header(n_q=6, frames=1000, samples=None):
    samples = samples if samples is not None else frames * 240 - 17
    return Header(b"\x01\x02\x03\x04\x05\x06\x07\x08", 24000, n_q * 1000, n_q, 10, frames, samples)


@pytest.mark.parametrize("n_q, frames", [(1, 1), (6, 1000), (1, 1000), (6, 7), (3, 9)])
def test_round_trip_and_size(n_q, frames):
    rng = np.random.default_rng(n_q * 1000 + frames)
    idx = rng.integers(0, 1024, size=(n_q, frames))
    data = bitstream.dumps(_header(n_q, frames, max(0, frames * 240 - 5)), idx)
    assert len(data) == HEADER_BYTES + math.ceil(frames * n_q * 10 / 8)
    header, back = bitstream.loads(data)
    assert np.array_equal(back, idx)
    assert header.n_stages == n_q and header.n_frames == frames and header.bits == 10


def test_ten_seconds_at_6kbps_is_about_7_5_kB():
    data = bitstream.dumps(_header(6, 1000), np.zeros((6, 1000), dtype=np.int64))
    assert len(data) == 32 + 7500


def test_bit_layout_is_msb_first_frame_major():
    idx = np.array([[1023, 0], [1, 512]])  # [n_q=2, frames=2]
    payload = bitstream.pack_indices(idx, 10)
    bits = "".join(f"{b:08b}" for b in payload)
    assert bits[:40] == f"{1023:010b}{1:010b}{0:010b}{512:010b}"


def test_clear_errors():
    good = bitstream.dumps(_header(1, 10), np.zeros((1, 10), dtype=np.int64))
    with pytest.raises(BitstreamError, match="bad magic"):
        bitstream.loads(b"RIFF" + good[4:])
    with pytest.raises(BitstreamError, match="truncated"):
        bitstream.loads(good[:-1])
    with pytest.raises(BitstreamError, match="truncated"):
        bitstream.loads(good[:20])
    with pytest.raises(BitstreamError, match="trailing"):
        bitstream.loads(good + b"\0")
    flipped = bytearray(good)
    flipped[40] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        bitstream.loads(bytes(flipped))
    with pytest.raises(BitstreamError, match="version"):
        bitstream.loads(good[:4] + b"\x09" + good[5:])
    with pytest.raises(BitstreamError, match="bad magic"):
        bitstream.loads(b"")


def test_read_header_needs_only_the_first_32_bytes():
    """``read_header`` gives the header ``loads`` gives, from the first 32 bytes alone (what
    lrac-decode reads to find a file's pretrained maker), and refuses what is not an .lrac header."""
    header = _header(6, 50)
    good = bitstream.dumps(header, np.zeros((6, 50), dtype=np.int64))
    assert bitstream.read_header(good[:HEADER_BYTES]) == bitstream.loads(good)[0] == header
    with pytest.raises(BitstreamError, match="bad magic"):
        bitstream.read_header(b"RIFF" + good[4:HEADER_BYTES])
    with pytest.raises(BitstreamError, match="truncated"):
        bitstream.read_header(good[:20])
    with pytest.raises(BitstreamError, match="corrupted header"):
        bitstream.read_header(good[:5] + b"\x00" + good[6:HEADER_BYTES])


def test_fuzz_never_raises_anything_else_and_never_hangs():
    rng = random.Random(1234)
    good = bitstream.dumps(_header(6, 50), np.random.default_rng(0).integers(0, 1024, (6, 50)))
    cases = []
    for _ in range(600):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        cases.append(bytes(data))
    cases += [good[: rng.randrange(len(good))] for _ in range(200)]
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400))) for _ in range(200)]
    cases += [b"LRAC" + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200))) for _ in range(200)]
    start = time.perf_counter()
    accepted = 0
    for data in cases:
        try:
            bitstream.loads(data)
            accepted += 1
        except BitstreamError as exc:
            assert "\n" not in str(exc)
    assert time.perf_counter() - start < 30
    assert accepted == 0  # every mutation is caught (CRC-32 catches all 1-4 bit flips here)

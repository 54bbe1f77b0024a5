"""The .lrac format: round trip, exact size, and fuzzing (never an uncaught exception, never a hang)."""

import math
import os
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


def _write(path, header, idx, rng):
    """Write ``idx`` through LracWriter in random-sized pieces."""
    with bitstream.LracWriter(path, header.model_id, header.sample_rate, header.bitrate_bps,
                              header.n_stages, header.bits) as writer:
        pos = 0
        while pos < idx.shape[1]:
            size = int(rng.integers(0, 3000))
            writer.write(idx[:, pos:pos + size])
            pos += size
        return writer.close(header.num_samples)


@pytest.mark.parametrize("n_q, frames", [(1, 1), (6, 9000), (1, 8193), (6, 7)])
def test_block_writer_and_reader_equal_dumps_and_loads(tmp_path, n_q, frames):
    rng = np.random.default_rng(frames)
    idx = rng.integers(0, 1024, size=(n_q, frames))
    header = _header(n_q, frames)
    path = tmp_path / "x.lrac"
    assert _write(path, header, idx, rng) == header
    assert path.read_bytes() == bitstream.dumps(header, idx)
    with bitstream.LracReader(path) as reader:
        assert reader.header == header
        blocks = list(reader.blocks())
    assert max(b.shape[1] for b in blocks) <= bitstream.BLOCK_FRAMES
    assert np.array_equal(np.concatenate(blocks, axis=1), idx)
    assert [p.name for p in tmp_path.iterdir()] == ["x.lrac"]   # no temporary file left


def test_writer_leaves_no_file_on_error(tmp_path):
    path = tmp_path / "x.lrac"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with bitstream.LracWriter(path, bytes(8), 24000, 1000, 1, 10) as writer:
            writer.write(np.zeros((1, 100), dtype=np.int64))
            raise RuntimeError("the input failed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["x.lrac"] and path.read_bytes() == b"old"


def _crafted(n_q, bits, frames, samples, payload=None):
    """Header fields as given, the payload (zeros of the size the header implies unless given)
    and a correct CRC: what an attacker who read the format writes."""
    import struct
    import zlib
    head = struct.pack("<4sBB8sIHII", b"LRAC", 1, bits << 4 | n_q, bytes(8), 24000, 1000, frames, samples)
    payload = bytes(bitstream.payload_bytes(frames, n_q, bits)) if payload is None else payload
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_files_without_audio_or_longer_than_a_wav_holds_are_refused():
    with pytest.raises(BitstreamError, match="holds no audio"):
        bitstream.loads(_crafted(1, 10, 0, 0))
    with pytest.raises(BitstreamError, match="holds no audio"):
        bitstream.loads(_crafted(1, 10, 3, 0))
    with pytest.raises(BitstreamError, match="more than an .lrac file holds"):
        bitstream.read_header(_crafted(1, 10, 1, 2**32 - 1, payload=b"")[:HEADER_BYTES])
    with pytest.raises(BitstreamError, match="1 to"):
        bitstream.dumps(_header(1, 1, 0), np.zeros((1, 1), dtype=np.int64))


def test_size_is_checked_before_the_payload_is_read(tmp_path):
    """A valid header followed by 1 GiB (a sparse file) is refused by its size, and a header that
    promises 2^32 frames in a short file by the same check: neither is read or allocated."""
    import tracemalloc
    good = bitstream.dumps(_header(1, 10), np.zeros((1, 10), dtype=np.int64))
    trailing = tmp_path / "trailing.lrac"
    trailing.write_bytes(good)
    os.truncate(trailing, len(good) + 2**30)
    promise = tmp_path / "promise.lrac"
    promise.write_bytes(_crafted(15, 15, 2**32 - 1, 2**31 - 2**16, payload=b"\0" * 64))
    tracemalloc.start()
    try:
        for path, message in [(trailing, "has trailing bytes"), (promise, "truncated")]:
            with pytest.raises(BitstreamError, match=message):
                bitstream.LracReader(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_reading_a_long_file_holds_one_block(tmp_path):
    """Ten hours at 6 kbps (27 MB): unpacking holds one block of frames at a time."""
    import tracemalloc
    frames = 3_600_000
    header = _header(6, frames, frames * 240)
    path = tmp_path / "long.lrac"
    with bitstream.LracWriter(path, header.model_id, 24000, 6000, 6, 10) as writer:
        block = np.arange(6 * 1000).reshape(6, 1000) % 1024
        tracemalloc.start()
        for _ in range(frames // 1000):
            writer.write(block)
        writer.close(header.num_samples)
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    tracemalloc.start()
    with bitstream.LracReader(path) as reader:
        read = sum(b.shape[1] for b in reader.blocks())
    read_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert read == frames
    # the whole file at once: 27 MB of bytes, 216 MB of bits
    assert write_peak < 4 << 20 and read_peak < 4 << 20, (write_peak, read_peak)

"""Corrupted and crafted ``.lrac`` files for fuzzing the decoder (tests/test_fuzz.py with a few
hundred, benchmarks/fuzz.py with 10,000): bit flips, truncations, random bytes, and headers with
chosen fields and a recomputed CRC (the checksum is no defence against someone who read the format).
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Iterator

from lrac import bitstream

KINDS = ("bit flips", "truncated", "random bytes", "LRAC + random", "crafted header")
_MAX_PAYLOAD = 100_000   # crafted payloads of the size the header implies up to this many bytes


def crafted(rng: random.Random, model_id: bytes, hop: int = 240) -> bytes:
    """A consistent header (the model's id, 24 kHz, 1 or 6 stages of 10 bits at their bitrate, a
    length that fits the frames) with none to four fields changed to edge or random values, a
    random payload (mostly of the size the header implies) and a correct CRC."""
    n_q = rng.choice([1, 6])
    frames = rng.choice([1, 2, 7, 50, 300])
    f = {"version": 1, "n_q": n_q, "bits": 10, "model_id": model_id, "rate": 24000,
         "bitrate": n_q * 1000, "frames": frames, "samples": frames * hop - rng.randrange(hop)}
    edges = {"version": [0, 2, 255], "n_q": [0, 2, 3, 5, 7, 15], "bits": [0, 1, 4, 9, 11, 15],
             "model_id": [bytes(8), bytes(rng.getrandbits(8) for _ in range(8))],
             "rate": [0, 1, 8000, 16000, 2**32 - 1], "bitrate": [0, 3000, 2**16 - 1],
             "frames": [0, 3, 2**31, 2**32 - 1], "samples": [0, 1, 2**31, 2**32 - 1, frames * hop + hop]}
    for key in rng.sample(sorted(edges), rng.choice([0, 0, 1, 1, 2, 3, 4])):
        f[key] = rng.choice(edges[key] + [rng.randrange(2**16)] if key not in ("model_id",) else edges[key])
    f["n_q"], f["bits"] = f["n_q"] % 16, f["bits"] % 16
    size = bitstream.payload_bytes(f["frames"], f["n_q"], f["bits"])
    if size > _MAX_PAYLOAD or rng.random() < 0.1:
        size = rng.randrange(64)
    payload = bytes(rng.getrandbits(8) for _ in range(size))
    head = struct.pack("<4sBB8sIHII", b"LRAC", f["version"] % 256, f["bits"] << 4 | f["n_q"], f["model_id"],
                       f["rate"] % 2**32, f["bitrate"] % 2**16, f["frames"] % 2**32, f["samples"] % 2**32)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def cases(good: bytes, model_id: bytes, count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``count`` ``(kind, file bytes)`` made from the valid file ``good``, the kinds in turn."""
    rng = random.Random(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        if kind == "bit flips":
            data = bytearray(good)
            for bit in rng.sample(range(8 * len(data)), rng.randint(1, 8)):   # distinct: none undone
                data[bit // 8] ^= 1 << bit % 8
            yield kind, bytes(data)
        elif kind == "truncated":
            yield kind, good[: rng.randrange(len(good))]
        elif kind == "random bytes":
            yield kind, bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))
        elif kind == "LRAC + random":
            yield kind, b"LRAC" + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
        else:
            yield kind, crafted(rng, model_id)

"""Golden outputs of the shipped models: tokens and decoded audio of t1 and t2 at 1 and 6 kbps on the
example clip, bit-exact. Any change of the code or the weights that changes what users get fails here.

Shipping new weights on purpose changes them: regenerate with
``LRAC_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`` and commit tests/golden.json with the
weights (the diff then shows which models changed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lrac.codec import Codec

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.json"
CLIP = HERE.parent / "examples" / "p238_165.flac"
SECONDS = 2.0
CASES = [(name, bitrate) for name in ("t1", "t2") for bitrate in (1000, 6000)]


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:32]


def _outputs(name: str, bitrate: int) -> dict:
    audio, sr = sf.read(CLIP, dtype="float32")
    assert sr == 24000
    audio = audio[: int(SECONDS * sr)]
    codec = Codec.pretrained(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order: the decoder runs in float32
    try:
        tokens = codec.encode(audio, bitrate)
        decoded = codec.decode(tokens)[0, 0].numpy()
    finally:
        torch.set_num_threads(threads)
    pcm16 = np.round(np.clip(decoded, -1, 1) * 32767).astype("<i2")
    return {"model_id": codec.model_id.hex(), "tokens_shape": list(tokens.shape),
            "tokens": _digest(tokens.numpy().astype("<i2")), "pcm16": _digest(pcm16),
            "rms": round(float(np.sqrt(np.mean(decoded.astype(np.float64) ** 2))), 6)}


@pytest.fixture(scope="module")
def golden() -> dict:
    if os.environ.get("LRAC_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({f"{n}@{b}": _outputs(n, b) for n, b in CASES}, indent=1) + "\n")
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name, bitrate", CASES)
def test_shipped_model_output_is_unchanged(golden, name, bitrate):
    want = golden[f"{name}@{bitrate}"]
    got = _outputs(name, bitrate)
    assert got["model_id"] == want["model_id"], f"{name}: other weights than the golden ones"
    assert got["tokens_shape"] == want["tokens_shape"]
    assert got["tokens"] == want["tokens"], f"{name} @ {bitrate} bit/s: the tokens changed"
    assert got["pcm16"] == want["pcm16"], (f"{name} @ {bitrate} bit/s: the decoded audio changed "
                                           f"(rms {got['rms']} against {want['rms']})")

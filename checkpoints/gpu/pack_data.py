"""Pack the training data into ``.gpu/`` so that it fits one device call (64 MiB with the repository).

    python checkpoints/gpu/pack_data.py      # then: echo /.gpu/ >> .git/info/exclude

The training speech (2.66 h, 157 MB of FLAC) does not fit as it is: it is carried as Ogg Opus at
about 24 kbps (libsndfile ``compression_level=0.93``; 35 MB), which the device decodes back to wav
(``prep.py``). Opus at this rate is near-transparent for speech, far above what the codec reproduces
at 6 kbps, but the targets are not bit-exact. Track 2's noises (47 MB) are carried as one 5 s excerpt
of each training noise (validation noises: 10 s), also as Opus (0.9 MB; as FLAC, 5.6 MB, they do not
fit beside the repository), RIRs whole, the validation speech (13 clips) as FLAC.
Reads the split lists of ``../shared/data/splits``; "valid13" is every 6th validation clip.
"""

import os
import shutil
import sys
from multiprocessing import Pool

import numpy as np
import soundfile as sf

from lrac.audio import resample

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")) + "/"
DEST = ".gpu/data/"
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def pack(item: tuple[str, str, str, float, int]) -> str:
    """One list entry -> its packed copy; returns the new list line."""
    utt, src, how, crop_s, seed = item
    rel = os.path.relpath(src, ROOT)
    dst = DEST + (rel if how == "copy" else os.path.splitext(rel)[0] + ".opus")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.exists(dst):
        if how == "copy":
            shutil.copyfile(src, dst)
        else:
            write_opus(src, dst, crop_s if how == "crop" else 0.0, seed)
    return f"{utt} {dst}\n"


def write_opus(src: str, dst: str, crop_s: float, seed: int) -> None:
    """``src`` as Ogg Opus at ``dst``; with ``crop_s`` > 0 only a random excerpt that long."""
    x, sr = sf.read(src, dtype="float32")
    n = int(crop_s * sr)
    if 0 < n < len(x):
        start = int(np.random.default_rng(seed).integers(0, len(x) - n))
        x = x[start:start + n]
    if sr not in OPUS_RATES:  # Opus takes only these rates
        x, sr = resample(x.T, sr, 24000).T, 24000
    sf.write(dst, x, sr, format="OGG", subtype="OPUS", compression_level=0.93)


def split_entries(name: str) -> list[tuple[str, str]]:
    """``(uid, path)`` of ``splits/<name>.txt``; the uid is the path with ``__`` for ``/``, no suffix."""
    rels = (open(ROOT + f"splits/{name}.txt").read()).split()
    return [(os.path.splitext(rel)[0].replace("/", "__"), ROOT + rel) for rel in rels]


def main() -> None:
    os.makedirs(".gpu/lists", exist_ok=True)
    jobs = {"train.speech": ("train.speech", "opus", 0), "valid13": ("valid.speech", "copy", 0),
            "train.noise": ("train.noise", "crop", 5.0), "valid.noise": ("valid.noise", "crop", 10.0),
            "train.rir": ("train.rir", "copy", 0), "valid.rir": ("valid.rir", "copy", 0)}
    with Pool() as pool:
        for name, (split, how, crop_s) in jobs.items():
            entries = split_entries(split)[::6] if name == "valid13" else split_entries(split)
            items = [(utt, path, how, crop_s, i) for i, (utt, path) in enumerate(entries)]
            lines = pool.map(pack, items, chunksize=8)
            open(f".gpu/lists/{name}.scp", "w").writelines(lines)
            print(f"{name}: {len(lines)} files", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Turn a continuation file into one of the coded pitch path (model.frame.harmonic, lrac/models/pitch.py).

    python checkpoints/add_pitch_path.py checkpoints/t1-gd.pt exp/t1-pitch-init.pt

Works on a file of the plain frame decoder and on one of the earlier predicted-pitch decoder. Every
weight is copied where its shape overlaps the new one: the encoder's input layer gets fresh columns
for the pitch features, the decoder head fresh rows for the harmonic share (the old pitch head's
rows are dropped), and the first quantiser stage, which gives 3 of its 10 bits to the pitch code,
keeps its first 4 projections. The result starts a run with
``lrac-train --init-from DEST --set model.frame.harmonic=true``.
"""

import sys

import torch

from lrac.codec import Codec, atomic_torch_save
from lrac.config import Config


def add_pitch_path(src: str, dest: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=False)
    cfg = Config.from_dict(state["config"]).override(["model.frame.harmonic=true"])
    torch.manual_seed(0)
    fresh = Codec(cfg).generator.state_dict()
    for name, old in state["generator"].items():
        new = fresh[name]
        overlap = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, new.shape))
        new[overlap] = old[overlap].to(new.dtype)
    state.update(config=cfg.to_dict(), generator=fresh)
    state.pop("model_id", None)
    atomic_torch_save(state, dest)


if __name__ == "__main__":
    add_pitch_path(*sys.argv[1:3])

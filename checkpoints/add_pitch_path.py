"""Turn a continuation file of the plain frame decoder into one with the pitch path.

    python checkpoints/add_pitch_path.py checkpoints/t1-gd.pt exp/t1-pitch-init.pt

Every weight is copied; the encoder's input layer gets fresh columns for the pitch features and
the decoder head fresh rows for the harmonic gain and the pitch head (model.frame.harmonic, lrac/models/pitch.py). The result
starts a run with ``lrac-train --init-from DEST --set model.frame.harmonic=true``.
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
        if old.shape == new.shape:
            fresh[name] = old.to(new.dtype)
        elif old.shape[0] != new.shape[0]:  # decoder head: new rows (harmonic gain, pitch) stay as initialised
            fresh[name][: old.shape[0]] = old.to(new.dtype)
        else:  # encoder input layer: new columns (pitch features) stay as initialised
            fresh[name][:, : old.shape[1]] = old.to(new.dtype)
    state.update(config=cfg.to_dict(), generator=fresh)
    state.pop("model_id", None)
    atomic_torch_save(state, dest)


if __name__ == "__main__":
    add_pitch_path(*sys.argv[1:3])

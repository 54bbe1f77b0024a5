"""Carry a continuation file over to a changed model: the same weights in a model built with overrides.

    python checkpoints/convert.py SRC DEST KEY=VALUE [KEY=VALUE ...]
    python checkpoints/convert.py checkpoints/t1-gd.pt exp/t1-pitch-init.pt model.frame.harmonic=true
    python checkpoints/convert.py exp/t1-anneal/last.pt exp/t1-fine-init.pt model.frame.pitch_fine_bits=4

Every weight is copied where its shape overlaps the new one; the rest keeps its fresh initialisation.
Adding the pitch path (``model.frame.harmonic=true``) gives the encoder's input layer fresh columns
for the pitch features and the decoder head fresh rows for the harmonic share (an earlier
predicted-pitch head's rows are dropped), and the first quantiser stage, which gives 3 of its 10 bits
to the pitch code, keeps its first 4 projections. Adding the refinement
(``model.frame.pitch_fine_bits=4``) leaves the second stage its first 3 projections (6 of 10 bits).
Discriminator weights pass through. The result starts a run with
``lrac-train --init-from DEST --set KEY=VALUE ...`` (the same overrides).
"""

import sys

import torch

from lrac.codec import Codec, atomic_torch_save
from lrac.config import Config


def convert(src: str, dest: str, overrides: list[str]) -> None:
    state = torch.load(src, map_location="cpu", weights_only=False)
    cfg = Config.from_dict(state["config"]).override(overrides)
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
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2], sys.argv[3:])

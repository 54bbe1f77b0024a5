"""A continuation file from one run's generator and another run's discriminator.

    python checkpoints/with_discriminator.py exp/t1-main/last.pt exp/t1-disc/last.pt exp/t1-gan-init.pt

Why: a reconstruction-only run never trains its discriminator; starting its discriminator phase
with the trained discriminator of an earlier run of the same preset skips the discriminator's
own warm-up. The result starts a run with ``lrac-train --init-from DEST``.
"""

import sys

import torch

from lrac.codec import atomic_torch_save
from lrac.train.checkpoint import save_gan_weights


def with_discriminator(generator_from: str, discriminator_from: str, dest: str) -> None:
    save_gan_weights(generator_from, dest)
    state = torch.load(dest, map_location="cpu", weights_only=False)
    disc = torch.load(discriminator_from, map_location="cpu", weights_only=False)["discriminator"]
    state["discriminator"] = {k: v.float() for k, v in disc.items()}
    atomic_torch_save(state, dest)


if __name__ == "__main__":
    with_discriminator(*sys.argv[1:4])

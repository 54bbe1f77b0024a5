"""A shipped model file from a training checkpoint: the generator only, float16, with a note.

    python checkpoints/ship.py exp/t1-s9/last.pt /tmp/t1-candidate.pt "preview model, version 8 (...)"
    cp /tmp/t1-candidate.pt lrac/pretrained/t1.pt      # once benchmarks/compare.py shows it is better

The float16 rounding happens before the comparison, so the evaluated file is the file that ships.
``Codec.pretrained`` reads the note; docs/results.md keeps the figures of every shipped version.
"""

import sys

from lrac.codec import Codec


def ship(checkpoint: str, dest: str, note: str) -> None:
    codec = Codec.load(checkpoint, inference=False)
    codec.note = note
    codec.save(dest, half=True)
    print(f"{dest}: model id {codec.model_id.hex()}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ship(*sys.argv[1:4])

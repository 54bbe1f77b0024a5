"""A shipped model file from a training checkpoint: the generator only, float16, with a note.

    python checkpoints/ship.py exp/t1-main/last.pt /tmp/t1-candidate.pt "preview model, version 16 (...)"
    cp /tmp/t1-candidate.pt lrac/pretrained/t1.pt      # once benchmarks/compare.py shows it is better

Settings that need no weights (the tracker's voicing keys, for example) can be changed on the way:

    python checkpoints/ship.py lrac/pretrained/t1.pt /tmp/t1-candidate.pt "..." \\
        model.frame.voicing_onset_ms=6.67 model.frame.voicing_onset_dip=0.4

(a setting that changes a weight's shape fails to load). The float16 rounding happens before the
comparison, so the evaluated file is the file that ships. ``Codec.pretrained`` reads the note;
docs/results.md keeps the figures of every shipped version.
"""

import sys

from lrac.codec import Codec


def ship(checkpoint: str, dest: str, note: str, settings: list[str]) -> None:
    codec = Codec.load(checkpoint, inference=False)
    if settings:
        codec = codec.with_settings(settings)
    codec.note = note
    codec.save(dest, half=True)
    print(f"{dest}: model id {codec.model_id.hex()}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    ship(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])

"""A shipped model file from a training checkpoint: the generator only, float16, with a note.

    python checkpoints/ship.py exp/t1-main/last.pt /tmp/t1-candidate.pt "preview model, version 16 (...)" t1
    cp /tmp/t1-candidate.pt lrac/pretrained/t1.pt      # once benchmarks/compare.py shows it is better

The optional last argument names the model (``t1``, ``t2``). The float16 rounding happens before the
comparison, so the evaluated file is the file that ships (:func:`lrac.train.checkpoint.export_model`).
``Codec.pretrained`` reads the note; docs/results.md keeps the figures of every shipped version.
"""

import sys

from lrac.train.checkpoint import export_model

if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    codec = export_model(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else None)
    print(f"{sys.argv[2]}: model id {codec.model_id.hex()}")

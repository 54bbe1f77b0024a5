"""A shipped model file from a training checkpoint: the generator only, float16, with a note.

    python checkpoints/ship.py exp/t1-main/last.pt /tmp/t1-candidate.pt "preview model, version 16 (...)" t1
    cp /tmp/t1-candidate.pt lrac/pretrained/t1.pt      # once benchmarks/compare.py shows it is better

The optional fourth argument names the model (``t1``, ``t2``); ``--set KEY=VALUE`` (repeatable)
changes a setting without weights, for a "same weights" version (a new coding rule):

    python checkpoints/ship.py lrac/pretrained/t1.pt /tmp/t1-v20.pt "..." t1 \
        --set model.frame.pitch.fine_levels=companded

The float16 rounding happens before the comparison, so the evaluated file is the file that ships
(:func:`lrac.train.checkpoint.export_model`). ``Codec.pretrained`` reads the note;
docs/results.md keeps the figures of every shipped version.
"""

import sys

from lrac.train.checkpoint import export_model

if __name__ == "__main__":
    args, rules = [], []
    rest = sys.argv[1:]
    while rest:
        arg = rest.pop(0)
        if arg == "--set" and rest:
            rules.append(rest.pop(0))
        else:
            args.append(arg)
    if len(args) not in (3, 4) or "--set" in args:
        sys.exit(__doc__)
    try:
        codec = export_model(*args[:3], args[3] if len(args) == 4 else None, rules)
    except ValueError as exc:   # a file that does not load, a setting that needs other weights
        sys.exit(f"error: {exc}")
    print(f"{args[1]}: model id {codec.model_id.hex()}")

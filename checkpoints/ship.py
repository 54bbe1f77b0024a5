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

import argparse
import sys

from lrac.cli.common import user_errors
from lrac.train.checkpoint import export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="checkpoint or model file")
    parser.add_argument("dest", help="the model file to write")
    parser.add_argument("note", help="what users should know about these weights")
    parser.add_argument("name", nargs="?", help="the model's name (t1, t2)")
    parser.add_argument("--set", dest="rules", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting without weights (repeatable)")
    args = parser.parse_args()
    codec = export_model(args.source, args.dest, args.note, args.name, args.rules)
    print(f"{args.dest}: model id {codec.model_id.hex()}")


if __name__ == "__main__":
    # a file that does not load or is missing, a setting that needs other weights: one line, exit 2
    sys.exit(user_errors(main)())

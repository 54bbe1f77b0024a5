"""Write the ``exp/lists/*.scp`` files every recipe and benchmark names, from the shared splits.

``python benchmarks/make_lists.py`` reads ``splits/<split>.<kind>.txt`` of the shared data
(``LRAC_DATA``, else ``../shared/data``) and writes ``<id> <absolute path>`` lists (ids as
:func:`lrac.lists.id_of_path` makes them from the path inside the data folder):

- ``{train,valid,test}.{speech,noise,rir}.scp``: the whole splits;
- ``valid77.scp``: every validation clip (selection); ``valid25.scp``: 25 of them spread evenly
  (the training curve); ``test40.scp``: 40 test clips spread evenly (the anchors' clips);
  ``train150.scp``: 150 training clips spread evenly (settings that have no weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from anchors import data_root, default_clips  # noqa: E402

from lrac.cli.common import user_errors  # noqa: E402
from lrac.lists import id_of_path, write_scp  # noqa: E402

SUBSETS = {"valid77": ("valid", 77), "valid25": ("valid", 25), "test40": ("test", 40),
           "train150": ("train", 150)}


def entries(root: Path, paths: list[Path]) -> list[tuple[str, str]]:
    """``[(id, absolute path)]`` in split order (ids from the path inside ``root``)."""
    return [(id_of_path(str(p.relative_to(root))), str(p.resolve())) for p in paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "exp" / "lists"), help="folder for the lists")
    args = ap.parse_args()
    root = data_root()
    if not (root / "splits").is_dir():
        raise FileNotFoundError(f"no splits at {root / 'splits'} (set LRAC_DATA to the shared data folder)")
    out = Path(args.out)
    for listing in sorted((root / "splits").glob("*.txt")):
        paths = [root / p for p in listing.read_text().split()]
        write_scp(out / f"{listing.stem}.scp", entries(root, paths), sort=False)
    for name, (split, n) in SUBSETS.items():
        write_scp(out / f"{name}.scp", entries(root, default_clips(n, split)), sort=False)
    print(f"lists written to {out}")


if __name__ == "__main__":
    user_errors(main)()

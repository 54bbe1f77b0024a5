"""benchmarks/make_lists.py: the exp/lists every recipe names, from a data folder's splits."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from lrac.lists import read_scp

REPO = Path(__file__).resolve().parents[1]


def _data(root: Path) -> None:
    (root / "splits").mkdir(parents=True)
    for split, n in (("train", 300), ("valid", 77), ("test", 161)):
        rel = [f"speech/corpus_{split}/utt{i:03d}.wav" for i in range(n)]
        (root / "splits" / f"{split}.speech.txt").write_text("\n".join(rel) + "\n")
    (root / "speech" / "corpus_valid").mkdir(parents=True)
    sf.write(root / "speech" / "corpus_valid" / "utt000.wav", np.zeros(240, np.float32), 24000)


def _run(root: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LRAC_DATA=str(root))
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_lists.py"), "--out", str(out)],
                          env=env, capture_output=True, text=True)


def test_lists_hold_every_split_and_the_spread_subsets(tmp_path):
    root, out = tmp_path / "data", tmp_path / "lists"
    _data(root)
    done = _run(root, out)
    assert done.returncode == 0, done.stderr
    valid = read_scp(out / "valid.speech.scp")
    assert len(valid) == 77
    assert valid[0] == ("speech_corpus_valid_utt000", str((root / "speech/corpus_valid/utt000.wav").resolve()))
    valid25 = [uid for uid, _ in read_scp(out / "valid25.scp")]
    assert valid25 == [f"speech_corpus_valid_utt{i:03d}" for i in range(0, 75, 3)]    # every third, in order
    assert len(read_scp(out / "test40.scp")) == 40 and len(read_scp(out / "train150.scp")) == 150
    assert [uid for uid, _ in read_scp(out / "valid77.scp")] == [uid for uid, _ in valid]


def test_missing_splits_is_one_line_error(tmp_path):
    done = _run(tmp_path / "nowhere", tmp_path / "lists")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: no splits at") and not (tmp_path / "lists").exists()

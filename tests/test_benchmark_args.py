"""Benchmarks refuse bad options up front with one line and exit 2, before any model is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, args, says", [
    ("token_entropy.py", ["--packet-frames", "-1"], "--packet-frames must be 0"),
    ("oracle_lowband.py", ["--bits", "20", "4"], "--bits: each N must be at least 5"),
])
def test_a_bad_option_is_one_line_and_exit_2(script, args, says):
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert says in run.stderr and "Traceback" not in run.stderr

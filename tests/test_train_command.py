"""``lrac-train`` as a user and a scheduler meet it: the default preset, --print-config alone,
--resume after a --max-steps run, exit codes on signals, strict JSON logs, and runs killed at
random moments that resume without losing progress or leaving temporary files."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner

from lrac.cli.train import main
from lrac.config import load_config

REPO = Path(__file__).resolve().parents[1]
# a tiny t1: one block per side, narrow, short chunks, a checkpoint after every step
TINY = ["--batch-size", "2", "--no-progress", "--threads", "1",
        "--set", "model.frame.encoder_dim=32", "--set", "model.frame.encoder_layers=1",
        "--set", "model.frame.decoder_dim=32", "--set", "model.frame.decoder_layers=1",
        "--set", "model.latent_dim=16", "--set", "train.segment_samples=9600",
        "--set", "train.checkpoint_every_steps=1", "--set", "train.log_every_steps=1"]


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    folder = tmp_path / "speech"
    folder.mkdir()
    for i in range(2):
        t = np.arange(36000) / 24000
        audio = 0.2 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.01 * np.random.default_rng(i).standard_normal(len(t))
        sf.write(folder / f"clip{i}.wav", audio.astype(np.float32), 24000)
    return folder


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _step(out: Path) -> int:
    return int(torch.load(out / "last.pt", weights_only=False)["step"])


def test_print_config_needs_no_data_and_the_default_is_the_shipped_t1():
    code, out = _run("--print-config")
    assert code == 0, out
    cfg = yaml.safe_load(out)
    t1 = load_config("t1")
    assert cfg["name"] == "t1" and cfg["model"] == t1.to_dict()["model"]
    assert cfg["train"]["batch_size"] == 16                  # a batch a CPU holds, not the baseline's 384
    code, out = _run("--print-config", "--track", "2")
    assert code == 0 and yaml.safe_load(out)["name"] == "t2"
    code, out = _run("--track", "1")                          # training does need them
    assert code == 2 and "--data and --out" in out


def test_resume_after_a_max_steps_run_goes_on(tmp_path, clips):
    out = tmp_path / "run"
    code, text = _run("--data", clips, "--out", out, *TINY, "--max-steps", "2", "--set", "train.max_steps=5")
    assert code == 0, text
    assert _step(out) == 2
    code, text = _run("--data", clips, "--out", out, *TINY, "--resume", "--max-steps", "3")
    assert code == 0 and "resumed" in text and _step(out) == 3, text
    code, text = _run("--data", clips, "--out", out, *TINY, "--resume")     # on to train.max_steps
    assert code == 0 and _step(out) == 5, text
    # the log is strict JSON, one record per step here
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in train.jsonl"))
               for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]


def _valid_records(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in map(json.loads, (out / "train.jsonl").open())
            if "valid_mel" in r]


def test_validation_after_a_resume_equals_the_uninterrupted_run(tmp_path, clips):
    """A run resumed with ``--stage 5`` and its validation list under another name (same entries)
    logs the validation figures the uninterrupted run logs: 16 kHz speech, which stage 2 stores
    resampled as 16-bit wav, is validated on the same audio whether or not the prepared list is
    found."""
    folder = tmp_path / "valid"
    folder.mkdir()
    for i in range(2):
        t = np.arange(24000) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (150 + 30 * i) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
        sf.write(folder / f"v{i}.flac", audio.astype(np.float32), 16000)
    entries = "".join(f"v{i} {folder / f'v{i}.flac'}\n" for i in range(2))
    (tmp_path / "valid.scp").write_text(entries)
    (tmp_path / "valid_again.scp").write_text(entries)
    common = [*TINY, "--data", clips, "--set", "train.valid_every_steps=2", "--set", "train.valid_batches=1"]
    code, text = _run(*common, "--valid", tmp_path / "valid.scp", "--out", tmp_path / "a", "--max-steps", "4")
    assert code == 0, text
    code, text = _run(*common, "--valid", tmp_path / "valid.scp", "--out", tmp_path / "b", "--max-steps", "2")
    assert code == 0, text
    code, text = _run(*common, "--valid", tmp_path / "valid_again.scp", "--out", tmp_path / "b",
                      "--resume", "--stage", "5", "--max-steps", "4")
    assert code == 0 and "resumed" in text and "validation chunks differ" not in text, text
    straight, resumed = _valid_records(tmp_path / "a"), _valid_records(tmp_path / "b")
    assert [r["step"] for r in straight] == [2, 4]
    assert resumed == straight


def test_strict_json_writes_null_for_non_finite_values():
    from lrac.train.trainer import strict_json

    line = strict_json({"step": 3, "mel": math.nan, "g_loss": math.inf, "lr": 1e-4})
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {"step": 3, "mel": None,
                                                                         "g_loss": None, "lr": 1e-4}


def test_a_run_starts_by_removing_stale_temporary_files(tmp_path, clips):
    out = tmp_path / "run"
    (out / "best").mkdir(parents=True)
    stale = [out / ".last.pt.4242.0a1b2c3d.tmp", out / ".best.pt.tmp", out / "best" / ".step000000002.pt.77.ffffffff.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("not ours")             # not a hidden temp file of a write: kept
    code, text = _run("--data", clips, "--out", out, *TINY, "--max-steps", "1")
    assert code == 0, text
    assert not any(path.exists() for path in stale) and (out / "notes.tmp").exists()


def _start(out: Path, clips: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lrac.cli.train", "--data", str(clips), "--out", str(out),
                             *TINY, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(out: Path, after: float, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``last.pt`` is newer than ``after`` (the run is training)."""
    start = time.monotonic()
    while not ((out / "last.pt").is_file() and (out / "last.pt").stat().st_mtime > after):
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stdout.read()}")
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail("no checkpoint in time")
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_with_a_checkpoint_and_its_exit_code(tmp_path, clips, sig, code):
    out = tmp_path / "run"
    proc = _start(out, clips, "--max-steps", "100000")
    _wait_for_checkpoint(out, 0.0, proc)           # the first checkpoint, before the first step
    time.sleep(0.5)
    proc.send_signal(sig)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, text
    assert f"({sig.name})" in text and _step(out) >= 1


@pytest.mark.slow
def test_killed_runs_resume_without_losing_progress_or_leaving_temp_files(tmp_path, clips):
    """Four runs killed (SIGKILL) at random moments while they train, checkpoints written every
    step (so some kills land in a write), then a run to the end: each start continues from the
    last checkpoint, and no temporary file is left."""
    out = tmp_path / "run"
    rng = random.Random(0)
    steps, mtime = [], 0.0
    for _ in range(4):
        proc = _start(out, clips, "--resume", "--max-steps", "100000")
        _wait_for_checkpoint(out, mtime, proc)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        mtime = (out / "last.pt").stat().st_mtime
        steps.append(_step(out))
    assert steps == sorted(steps) and steps[-1] > steps[0] >= 0, steps
    proc = _start(out, clips, "--resume", "--max-steps", str(steps[-1] + 2))
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and _step(out) == steps[-1] + 2, text
    assert not list(out.glob(".*.tmp")) and not list(out.glob("best/.*.tmp"))

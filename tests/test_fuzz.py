"""Fuzzing the decoder end to end: corrupted and crafted .lrac files (tests/lrac_fuzz.py) give
only BitstreamErrors through the API and one-line errors through the CLI, never a traceback, a
hang or another exception. benchmarks/fuzz.py runs 10,000 cases."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from lrac.bitstream import BitstreamError
from lrac.cli.decode import main as decode_main
from lrac.codec import Codec
from lrac.compress import decode_file, encode_file
from lrac_fuzz import cases

from conftest import speechlike

N_CASES = 1000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The shipped t1 (else an untrained t1 preset: the pitch path parses its tokens) and a valid file."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("fuzz")
    if "t1" in Codec.pretrained_names():
        codec, model = Codec.pretrained("t1"), "t1"
    else:
        codec, model = Codec("t1"), str(folder / "m.pt")
        codec.save(model)
        codec = Codec.load(model)
    import soundfile as sf
    sf.write(folder / "in.wav", speechlike(0.5), 24000)
    encode_file(codec, folder / "in.wav", folder / "good.lrac", 6000)
    return codec, model, (folder / "good.lrac").read_bytes(), folder


def test_api_raises_only_bitstream_errors(setup):
    codec, _, good, folder = setup
    decoded = 0
    for i, (kind, data) in enumerate(cases(good, codec.model_id, N_CASES, seed=1)):
        path = folder / "case.lrac"
        path.write_bytes(data)
        try:
            decode_file(codec, path, folder / "case.wav")
            decoded += 1
        except BitstreamError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), (i, kind, exc)
    # crafted headers that are consistent decode (they are valid files); every other case fails
    assert 0 < decoded < N_CASES / 5


def test_cli_prints_one_line_per_bad_file_and_a_count(setup):
    codec, model, good, folder = setup
    inputs = folder / "inputs"
    inputs.mkdir()
    for i, (_, data) in enumerate(cases(good, codec.model_id, N_CASES, seed=2)):
        (inputs / f"{i:04d}.lrac").write_bytes(data)
    result = CliRunner().invoke(decode_main, [str(inputs), str(folder / "out"), "--model", model])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)   # not an uncaught error
    errors = [line for line in lines if line.startswith("error: ")]
    assert all(line.startswith(("error: ", "note: ")) for line in lines), lines
    decoded = len(list((folder / "out").rglob("*.wav"))) if (folder / "out").exists() else 0
    assert errors[-1] == f"error: {N_CASES - decoded} of {N_CASES} files failed"
    assert len(errors) == N_CASES - decoded + 1
    for i, (_, data) in enumerate(cases(good, codec.model_id, 20, seed=3)):   # single files
        (folder / "one.lrac").write_bytes(data)
        result = CliRunner().invoke(decode_main, [str(folder / "one.lrac"), str(folder / "one.wav"),
                                                  "--model", model])
        assert result.exit_code in (0, 2) and isinstance(result.exception, (SystemExit, type(None)))
        if result.exit_code == 2:
            lines = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr

"""``lrac-decode IN.lrac OUT.wav``: ``.lrac`` bitstream -> 16-bit PCM wav (or folders of them)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_USER_ERROR, check_positive, codec_for_command, fail, run_batch, user_errors


def _lrac_inputs(source: str) -> list[tuple[str, str]]:
    path = Path(source)
    if path.is_dir():
        files = sorted(path.rglob("*.lrac"))
        if not files:
            fail(f"{source}: no .lrac files found")
        return [(str(p.relative_to(path).with_suffix("")), str(p)) for p in files]
    from ..lists import read_scp
    return read_scp(path)


def _pretrained_maker(path: Path) -> str | None:
    """The installed pretrained model whose id the ``.lrac`` file's header carries, or None (unreadable
    files too: decoding them then reports what is wrong). Reads the header only."""
    from .. import bitstream
    from ..codec import Codec
    try:
        with open(path, "rb") as f:
            header = bitstream.read_header(f.read(bitstream.HEADER_BYTES), str(path))
    except (OSError, bitstream.BitstreamError):
        return None
    return Codec.pretrained_name_of(header.model_id)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.argument("output", required=False)
@click.option("--model", default=None,
              help="Model file (from lrac-train / Codec.save) or pretrained name (default: for one file, the "
                   "pretrained model its header names; else t1).")
@click.option("--sample-rate", type=int, default=None,
              help="Resample the output to this rate in Hz, 8000-384000 (default: the codec's, 24000).")
@click.option("--chunk-ms", type=float, default=None,
              help="Decode in streaming chunks of this many ms (same samples as the default path).")
@click.option("--print-config", is_flag=True, help="Print the model's config (YAML) and exit.")
@user_errors
def main(source: str, output: str | None, model: str | None, sample_rate: int | None,
         chunk_ms: float | None, print_config: bool) -> None:
    """Decode SOURCE (.lrac file, folder of them, or an scp list) into OUTPUT (wav file or folder)."""
    from ..compress import OUTPUT_RATES_HZ, decode_file

    # decode_file refuses such a rate too; checked here first so that no model loads for nothing
    if sample_rate is not None and not OUTPUT_RATES_HZ[0] <= sample_rate <= OUTPUT_RATES_HZ[1]:
        fail(f"--sample-rate must be {OUTPUT_RATES_HZ[0]}-{OUTPUT_RATES_HZ[1]} Hz, got {sample_rate}")
    check_positive("--chunk-ms", chunk_ms)
    path = Path(source)
    if model is None and not print_config and path.is_file() and path.suffix != ".scp":
        model = _pretrained_maker(path)
    codec = codec_for_command(model, print_config, output, "a .wav file, or a folder when SOURCE is a folder or list")
    if codec is None:
        return
    if not (path.is_dir() or path.suffix == ".scp"):
        decode_file(codec, source, output, sample_rate, chunk_ms)
        return
    out_dir = Path(output)
    failures = run_batch(_lrac_inputs(source),
                         lambda name, p: decode_file(codec, p, out_dir / f"{name}.wav", sample_rate,
                                                     chunk_ms), "decode")
    if failures:
        raise SystemExit(EXIT_USER_ERROR)

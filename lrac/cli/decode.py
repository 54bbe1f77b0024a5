"""``lrac-decode IN.lrac OUT.wav``: ``.lrac`` bitstream -> 16-bit PCM wav (or folders of them)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_USER_ERROR, check_number, codec_for_command, coding_options, fail, \
    check_threads, progress_bar, run_batch, set_threads, user_errors, version_option
from .encode import MAX_CHUNK_MS


def _lrac_inputs(source: str) -> list[tuple[str, str]]:
    path = Path(source)
    if path.is_dir():
        files = sorted(path.rglob("*.lrac"))
        if not files:
            fail(f"{source}: no .lrac files found")
        return [(str(p.relative_to(path).with_suffix("")), str(p)) for p in files]
    from ..lists import read_scp
    return read_scp(path)


def _check_lrac(path: Path) -> bytes:
    """Check a ``.lrac`` file whole (header, size, checksum) before any model (or torch) loads;
    return the model id its header carries."""
    from ..bitstream import LracReader

    with LracReader(path) as reader:
        return reader.header.model_id


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.argument("output", required=False)
@click.option("--model", default=None,
              help="Model file (from lrac-train / Codec.save) or pretrained name (default: for one file, the "
                   "pretrained model its header names; else t1).")
@click.option("--sample-rate", type=int, default=None,
              help="Resample the output to this rate in Hz, 8000-384000 (default: the codec's, 24000).")
@click.option("--chunk-ms", type=float, default=None,
              help="Decode in streaming chunks of this many ms, up to 30000 (same samples as the default path).")
@coding_options
@click.option("--print-config", is_flag=True, help="Print the model's config (YAML) and exit.")
@version_option
@user_errors
def main(source: str, output: str | None, model: str | None, sample_rate: int | None,
         chunk_ms: float | None, threads: int, no_progress: bool, print_config: bool) -> None:
    """Decode SOURCE (.lrac file, folder of them, or an scp list) into OUTPUT (.wav or .flac file,
    or a folder)."""
    from ..audio import OUTPUT_RATES_HZ, check_output_path

    # decode_file refuses such a rate too; checked here first so that no model loads for nothing
    if sample_rate is not None and not OUTPUT_RATES_HZ[0] <= sample_rate <= OUTPUT_RATES_HZ[1]:
        fail(f"--sample-rate must be {OUTPUT_RATES_HZ[0]}-{OUTPUT_RATES_HZ[1]} Hz, got {sample_rate}")
    check_number("--chunk-ms", chunk_ms, high=MAX_CHUNK_MS)
    check_threads(threads)
    path = Path(source)
    single = not (path.is_dir() or path.suffix == ".scp") and not print_config
    if single:   # a bad input or output is reported before torch and the model load
        if output is not None:
            check_output_path(output)
        model_id = _check_lrac(path)
        if model is None:
            from ..codec import Codec

            model = Codec.pretrained_name_of(model_id)
    from ..compress import decode_file

    set_threads(threads)
    codec = codec_for_command(model, print_config, output, "a .wav file, or a folder when SOURCE is a folder or list")
    if codec is None:
        return
    if single:
        decode_file(codec, source, output, sample_rate, chunk_ms, progress_bar("decode", not no_progress))
        return
    out_dir = Path(output)
    failures = run_batch(_lrac_inputs(source),
                         lambda name, p: decode_file(codec, p, out_dir / f"{name}.wav", sample_rate,
                                                     chunk_ms), "decode")
    if failures:
        raise SystemExit(EXIT_USER_ERROR)

if __name__ == "__main__":
    main()

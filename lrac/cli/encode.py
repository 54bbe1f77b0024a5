"""``lrac-encode IN OUT.lrac``: audio -> ``.lrac`` bitstream (a file, or a folder / wav.scp of them)."""

from __future__ import annotations

from pathlib import Path

import click

from ..audio import AudioReader, check_bitstream_path
from ..config import bitrate_from_kbps
from .common import EXIT_USER_ERROR, batch_items, check_number, codec_for_command, coding_options, \
    check_threads, engine_option, is_batch, progress_bar, run_batch, set_threads, user_errors, version_option

MAX_CHUNK_MS = 30000.0   # a longer chunk would hold more than the one-pass path (lrac.compress)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.argument("output", required=False)
@click.option("--bitrate", "bitrate_kbps", type=float, default=6.0, show_default=True,
              help="Bitrate in kbit/s (the model's modes, e.g. 1 or 6).")
@click.option("--model", default=None, help="Model file (from lrac-train / Codec.save) or pretrained name.")
@click.option("--chunk-ms", type=float, default=None,
              help="Encode in streaming chunks of this many ms, up to 30000 (same bytes as the default path).")
@coding_options
@click.option("--print-config", is_flag=True, help="Print the model's config (YAML) and exit.")
@engine_option
@version_option
@user_errors
def main(source: str, output: str | None, bitrate_kbps: float, model: str | None,
         chunk_ms: float | None, threads: int, no_progress: bool, print_config: bool, engine: str) -> None:
    """Encode SOURCE (audio file, folder, or wav.scp) into OUTPUT (.lrac file, or a folder)."""
    check_number("--bitrate", bitrate_kbps)
    check_number("--chunk-ms", chunk_ms, high=MAX_CHUNK_MS)
    check_threads(threads)
    single = not is_batch(source) and not print_config
    if single:   # a missing or unreadable input is reported before torch and the model load
        AudioReader(source).close()
        if output is not None:
            check_bitstream_path(output, source)
    from ..compress import encode_file

    set_threads(threads)
    codec = codec_for_command(model, print_config, output, "a .lrac file, or a folder when SOURCE is a folder or wav.scp",
                              engine)
    if codec is None:
        return
    bitrate_bps = bitrate_from_kbps(bitrate_kbps, codec.bitrates_bps)  # refused before touching files
    if single:
        info = encode_file(codec, source, output, bitrate_bps, chunk_ms,
                           progress_bar("encode", not no_progress))
        click.echo(f"{source} -> {output}: {info['seconds']:.2f} s, {info['bytes']} bytes "
                   f"({8 * info['bytes'] / max(info['seconds'], 1e-9) / 1000:.2f} kbit/s incl. header)",
                   err=True)
        return
    out_dir = Path(output)
    failures = run_batch(batch_items(source),
                         lambda name, path: encode_file(codec, path, out_dir / f"{name}.lrac",
                                                        bitrate_bps, chunk_ms), "encode")
    if failures:
        raise SystemExit(EXIT_USER_ERROR)

if __name__ == "__main__":
    main()

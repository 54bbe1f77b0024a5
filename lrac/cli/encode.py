"""``lrac-encode IN OUT.lrac``: audio -> ``.lrac`` bitstream (a file, or a folder / wav.scp of them)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_USER_ERROR, batch_items, check_positive, codec_for_command, is_batch, \
    run_batch, user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.argument("output", required=False)
@click.option("--bitrate", "bitrate_kbps", type=float, default=6.0, show_default=True,
              help="Bitrate in kbit/s (the model's modes, e.g. 1 or 6).")
@click.option("--model", default=None, help="Model file (from lrac-train / Codec.save) or pretrained name.")
@click.option("--chunk-ms", type=float, default=None,
              help="Encode in streaming chunks of this many ms (same bytes as the default path).")
@click.option("--print-config", is_flag=True, help="Print the model's config (YAML) and exit.")
@user_errors
def main(source: str, output: str | None, bitrate_kbps: float, model: str | None,
         chunk_ms: float | None, print_config: bool) -> None:
    """Encode SOURCE (audio file, folder, or wav.scp) into OUTPUT (.lrac file, or a folder)."""
    from ..compress import encode_file

    check_positive("--chunk-ms", chunk_ms)
    codec = codec_for_command(model, print_config, output, "a .lrac file, or a folder when SOURCE is a folder or wav.scp")
    if codec is None:
        return
    bitrate_bps = int(round(bitrate_kbps * 1000))
    codec.stages_for_bitrate(bitrate_bps)  # refuse a bad bitrate before touching files
    if not is_batch(source):
        info = encode_file(codec, source, output, bitrate_bps, chunk_ms)
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

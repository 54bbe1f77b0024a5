"""``lrac-decode IN.lrac OUT.wav``: ``.lrac`` bitstream -> 16-bit PCM wav (or folders of them)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_USER_ERROR, check_number, codec_for_command, coding_options, fail, \
    check_threads, engine_option, progress_bar, run_batch, set_threads, user_errors, version_option
from .encode import MAX_CHUNK_MS

PACKET_MS = (10, 20, 30, 40)   # 1-4 frames of 10 ms (lrac/packets.py)


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


def _check_loss_options(loss_pct, burst, seed, packet_ms, conceal, chunk_ms) -> None:
    """Refuse bad ``--simulate-loss`` options in one line, before torch and the model load."""
    if loss_pct is None:
        given = [name for name, value in (("--burst", burst), ("--seed", seed), ("--packet-ms", packet_ms),
                                          ("--conceal", conceal)) if value is not None]
        if given:
            fail(f"{given[0]} needs --simulate-loss")
        return
    check_number("--simulate-loss", loss_pct, 0, 100, low_inclusive=True, high_inclusive=False)
    check_number("--burst", burst, 1, low_inclusive=True)   # a mean burst length in packets
    check_number("--seed", seed, 0, low_inclusive=True)
    if packet_ms is not None and packet_ms not in PACKET_MS:
        fail(f"--packet-ms must be {', '.join(map(str, PACKET_MS[:-1]))} or {PACKET_MS[-1]}, got {packet_ms:g}")
    if chunk_ms is not None:
        fail("--chunk-ms and --simulate-loss do not go together (packets are the chunks)")


def _report(result: dict) -> None:
    if "lost_packets" in result:
        click.echo(f"lost {result['lost_packets']} of {result['packets']} packets", err=True)


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
@click.option("--simulate-loss", "loss_pct", type=float, default=None, metavar="P",
              help="Cut the tokens into packets, drop P %% of them (0-100) and decode the rest with "
                   "packet-loss concealment, to hear it.")
@click.option("--burst", type=float, default=None,
              help="With --simulate-loss: mean burst of lost packets (Gilbert-Elliott; default 1: "
                   "independent losses).")
@click.option("--seed", type=int, default=None, help="With --simulate-loss: seed of the losses (default 0).")
@click.option("--packet-ms", type=float, default=None,
              help="With --simulate-loss: packet length, 10-40 ms (default 20).")
@click.option("--conceal", type=click.Choice(["learned", "repeat", "zero"]), default=None,
              help="With --simulate-loss: concealment (default: learned for a model trained with "
                   "erasures, else repeat; zero: no concealment).")
@coding_options
@click.option("--print-config", is_flag=True, help="Print the model's config (YAML) and exit.")
@engine_option
@version_option
@user_errors
def main(source: str, output: str | None, model: str | None, sample_rate: int | None,
         chunk_ms: float | None, loss_pct: float | None, burst: float | None, seed: int | None,
         packet_ms: float | None, conceal: str | None, threads: int, no_progress: bool,
         print_config: bool, engine: str) -> None:
    """Decode SOURCE (.lrac file, folder of them, or an scp list) into OUTPUT (.wav or .flac file,
    or a folder)."""
    from ..audio import OUTPUT_RATES_HZ, check_output_path

    # decode_file refuses such a rate too; checked here first so that no model loads for nothing
    if sample_rate is not None and not OUTPUT_RATES_HZ[0] <= sample_rate <= OUTPUT_RATES_HZ[1]:
        fail(f"--sample-rate must be {OUTPUT_RATES_HZ[0]}-{OUTPUT_RATES_HZ[1]} Hz, got {sample_rate}")
    check_number("--chunk-ms", chunk_ms, high=MAX_CHUNK_MS)
    check_threads(threads)
    _check_loss_options(loss_pct, burst, seed, packet_ms, conceal, chunk_ms)
    if loss_pct is not None and engine != "torch":
        fail("--simulate-loss conceals with the PyTorch model: use --engine torch")
    path = Path(source)
    single = not (path.is_dir() or path.suffix == ".scp") and not print_config
    if single:   # a bad input or output is reported before torch and the model load
        if output is not None:
            check_output_path(output, source=path)
        model_id = _check_lrac(path)
        if model is None:
            from ..codec import Codec

            model = Codec.pretrained_name_of(model_id)
    from ..compress import LossSimulation, decode_file

    set_threads(threads)
    codec = codec_for_command(model, print_config, output, "a .wav file, or a folder when SOURCE is a folder or list",
                              engine)
    if codec is None:
        return
    loss = None if loss_pct is None else \
        LossSimulation(loss_pct, burst or 1.0, seed or 0, packet_ms or 20.0, conceal)
    if single:
        _report(decode_file(codec, source, output, sample_rate, chunk_ms,
                            progress_bar("decode", not no_progress), loss=loss))
        return
    out_dir = Path(output)
    failures = run_batch(_lrac_inputs(source),
                         lambda name, p: decode_file(codec, p, out_dir / f"{name}.wav", sample_rate,
                                                     chunk_ms, loss=loss), "decode")
    if failures:
        raise SystemExit(EXIT_USER_ERROR)

if __name__ == "__main__":
    main()

"""``lrac-export MODEL OUT_DIR``: the streaming encoder and decoder as ONNX graphs (lrac/export.py)."""

from __future__ import annotations

import click

from ..config import bitrate_from_kbps
from .common import load_codec, user_errors, version_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("out_dir")
@click.option("--chunk-frames", type=int, multiple=True, default=(1, 4), show_default=True,
              help="Chunk sizes in frames (10 ms each at 24 kHz) the graphs take (repeatable; 1 is always added).")
@click.option("--variant", "variants", type=click.Choice(["float32", "int8"]), multiple=True,
              default=("float32", "int8"), show_default=True,
              help="Weights of the graphs: float32, and/or int8 (the linear layers' weights in 8 bits).")
@click.option("--bitrate", "bitrates_kbps", type=float, multiple=True,
              help="Export the decoder for these bitrates only (kbit/s; default: all the model's).")
@click.option("--tvm", "tvm", is_flag=True,
              help="Then compile the float32 graphs with Apache TVM into OUT_DIR/tvm (lrac[tvm]; "
                   "--engine tvm of lrac-encode / lrac-decode runs them).")
@click.option("--tvm-mcpu", default="x86-64-v3", show_default=True,
              help="The CPU TVM compiles for (an LLVM CPU name; the default runs on any AVX2 x86-64).")
@version_option
@user_errors
def main(model: str, out_dir: str, chunk_frames: tuple[int, ...], variants: tuple[str, ...],
         bitrates_kbps: tuple[float, ...], tvm: bool, tvm_mcpu: str) -> None:
    """Export MODEL (a model file or a pretrained name: t1, t2) to OUT_DIR for lrac.runtime and ONNX Runtime."""
    from ..export import export_onnx

    if tvm:
        from ..tvm_engine import _import_tvm
        _import_tvm()   # a missing TVM: one line before the export
        if "float32" not in variants:
            variants = (*variants, "float32")   # TVM compiles the float32 graphs

    codec = load_codec(model)
    bitrates = [bitrate_from_kbps(b, codec.bitrates_bps) for b in bitrates_kbps] or None
    sidecar = export_onnx(codec, out_dir, chunk_frames=chunk_frames, variants=variants,
                          bitrates_bps=bitrates, log=lambda line: click.echo(line, err=True))
    click.echo(f"{out_dir}: {', '.join(sidecar['files'])} and lrac-onnx.json (model {sidecar['model_id']})",
               err=True)
    if tvm:
        from ..tvm_engine import TVM_SIDECAR, compile_tvm

        built = compile_tvm(out_dir, mcpu=tvm_mcpu, log=lambda line: click.echo(line, err=True))
        failed = sum("error" in g for g in built["graphs"].values())
        click.echo(f"{out_dir}/tvm: {len(built['graphs']) - failed} TVM libraries, {TVM_SIDECAR} "
                   f"({failed} graphs left to onnxruntime; target {built['target']})", err=True)


if __name__ == "__main__":
    main()

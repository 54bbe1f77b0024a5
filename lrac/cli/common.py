"""What every lrac command shares: error handling, model and config options, batch inputs.

Errors a user can cause (bad files, bad options, bad bitstreams) end the command with one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

from ..audio import AudioError
from ..lists import list_audio
from ..bitstream import BitstreamError
from ..config import Config, ConfigError, load_config

USER_ERRORS = (AudioError, BitstreamError, ConfigError, ValueError, FileNotFoundError, OSError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
DEFAULT_MODEL = "t1"   # the pretrained model commands use without --model


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def check_number(option: str, value: float | None, low: float = 0.0, high: float = math.inf,
                 low_inclusive: bool = False, high_inclusive: bool = True) -> None:
    """Refuse a numeric option that is not finite or not in range, with one line naming it
    (``None`` means not given). The range is ``(low, high]`` by default; ``low_inclusive`` and
    ``high_inclusive`` say whether each end belongs to it."""
    if value is None:
        return
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (math.isfinite(value) and above and below):
        bound = f"{'>=' if low_inclusive else '>'} {low:g}"
        if high < math.inf:
            bound += f" and {'<=' if high_inclusive else '<'} {high:g}"
        fail(f"{option} must be a finite number {bound}, got {value}")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrac")
    except PackageNotFoundError:
        from .. import __version__
        return __version__


def version_option(fn: Callable) -> Callable:
    """``--version``: print the package version and exit."""
    return click.version_option(package_version(), "--version", message="%(prog)s (lrac) %(version)s")(fn)


def coding_options(fn: Callable) -> Callable:
    """``--threads N`` and ``--no-progress`` of lrac-encode / lrac-decode."""
    fn = click.option("--no-progress", is_flag=True,
                      help="No progress bar (there is none either when stderr is not a terminal).")(fn)
    fn = click.option("--threads", type=int, default=1, show_default=True,
                      help="CPU threads for the model (the model is small: more rarely helps, and "
                           "a busy machine makes them slower).")(fn)
    return fn


MAX_THREADS = 1024


def check_threads(threads: int) -> None:
    check_number("--threads", threads, 1, MAX_THREADS, low_inclusive=True)


def set_threads(threads: int) -> None:
    """Give torch ``--threads`` threads (checked)."""
    check_threads(threads)
    import torch

    torch.set_num_threads(threads)


def progress_bar(what: str, enabled: bool) -> Callable[[float, float], None] | None:
    """A ``(done_s, total_s)`` callback drawing a bar in seconds of audio on stderr, or None when
    ``enabled`` is False or stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = None

    def update(done_s: float, total_s: float) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=round(total_s, 1), desc=what, unit="s", file=sys.stderr, leave=False)
        bar.n = round(min(done_s, total_s), 1)
        bar.refresh()
        if done_s >= total_s:
            bar.close()

    return update


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def user_errors(fn: Callable) -> Callable:
    """Turn user errors into one stderr line + exit 2; show warnings as one 'warning:' line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
            click.echo(f"warning: {message}", err=True)

        warnings.showwarning = show
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(one_line(exc))
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def config_options(fn: Callable) -> Callable:
    """``--config PRESET_OR_YAML``, ``--set KEY=VALUE`` (repeatable) and ``--print-config``."""
    fn = click.option("--print-config", is_flag=True, help="Print the effective config (YAML) and exit.")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a config value, e.g. --set train.lr=1e-4 (repeatable).")(fn)
    fn = click.option("--config", "config_name", default=None, metavar="PRESET_OR_YAML",
                      help="Preset name (t1, t2: the shipped models; baseline-t1, baseline-t2) or YAML file.")(fn)
    return fn


def build_config(config_name: str | None, overrides: tuple[str, ...], default: str = "baseline-t1"
                 ) -> Config:
    return load_config(config_name or default, list(overrides))


def note_headline(note: str) -> str:
    """A model note without its parenthesised details: the line a command prints on every run
    (the whole note stays in ``Codec.note``)."""
    out, depth = [], 0
    for ch in note:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            continue
        if not depth:
            out.append(ch)
    if depth:   # an unclosed bracket: nothing safe to drop
        return note
    return re.sub(r"\s+([,;:.])", r"\1", re.sub(r"\s{2,}", " ", "".join(out))).strip()


def load_codec(model: str | None):
    """The codec for ``--model``: a path, a pretrained name (``t1``/``t2``), or the default model."""
    from ..codec import Codec  # heavy import (torch) only when a model is needed

    installed = Codec.pretrained_names()
    if model is None:
        model = DEFAULT_MODEL
        if model not in installed:
            raise FileNotFoundError("no --model given and no pretrained weights are installed: "
                                    "pass --model PATH (a file written by lrac-train or Codec.save)")
    if model in installed:
        codec = Codec.pretrained(model)
        if codec.note:  # e.g. a preview model's quality warning
            click.echo(f"note: {note_headline(codec.note)}", err=True)
        return codec
    if not Path(model).exists():
        raise FileNotFoundError(f"--model {model}: file not found (pretrained names: "
                                f"{', '.join(installed) or 'none installed'})")
    return Codec.load(model)


def codec_for_command(model: str | None, print_config: bool, output: str | None, output_hint: str,
                      engine: str = "torch"):
    """Load the codec of ``--model`` (for ``engine``, see :func:`load_engine`); print its config and
    return None for ``--print-config``; refuse a missing OUTPUT argument."""
    codec = load_codec(model) if engine == "torch" or print_config else load_engine(model, engine)
    if print_config:
        click.echo(codec.config.to_yaml())
        return None
    if output is None:
        fail(f"missing OUTPUT ({output_hint})")
    return codec


def is_batch(source: str) -> bool:
    path = Path(source)
    return path.is_dir() or path.suffix == ".scp"


def batch_items(source: str) -> list[tuple[str, str]]:
    items = list_audio(source) if Path(source).suffix == ".scp" or Path(source).is_dir() else []
    if not items:
        raise AudioError(f"{source}: no inputs found")
    return items


def run_batch(items: list[tuple[str, Any]], work: Callable[[str, Any], None], what: str) -> int:
    """Run ``work(name, item)`` for each item with a progress bar; report failures, keep going.

    Returns the number of failures."""
    from tqdm import tqdm

    failures = 0
    for name, item in tqdm(items, desc=what, unit="file", file=sys.stderr,
                           disable=len(items) < 2 or not sys.stderr.isatty()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                work(name, item)
        except USER_ERRORS as exc:
            failures += 1
            click.echo(f"error: {one_line(exc)}", err=True)
    if failures:
        click.echo(f"error: {failures} of {len(items)} files failed", err=True)
    return failures


ENGINES = ("torch", "onnx", "onnx-int8", "tvm")


def engine_option(fn: Callable) -> Callable:
    """``--engine``: the PyTorch model, or its exported ONNX graphs run by onnxruntime."""
    return click.option("--engine", type=click.Choice(ENGINES), default="torch", show_default=True,
                        help="torch: the PyTorch model; onnx / onnx-int8: its exported streaming graphs "
                             "(float32 / 8-bit weights) in onnxruntime (lrac[runtime]); tvm: the float32 "
                             "graphs compiled by Apache TVM (lrac[tvm]); --model may then be an "
                             "lrac-export folder.")(fn)


def onnx_cache_dir() -> Path:
    """Where ``--engine onnx`` keeps the graphs it exports from a model file: $LRAC_CACHE/onnx, else
    ~/.cache/lrac/onnx."""
    import os
    root = os.environ.get("LRAC_CACHE") or Path.home() / ".cache" / "lrac"
    return Path(root) / "onnx"


def load_engine(model: str | None, engine: str):
    """The codec a command runs: :func:`load_codec`'s for ``torch``; else :class:`lrac.runtime.OnnxCodec`
    from an export folder given as ``--model``, or from the graphs of ``--model`` exported once into
    :func:`onnx_cache_dir` (one subfolder per model identity)."""
    if engine == "torch":
        return load_codec(model)
    from ..runtime import SIDECAR, OnnxCodec

    if engine == "tvm":
        from ..tvm_engine import _import_tvm
        _import_tvm()   # a missing TVM: one line before any export
    if model is not None and (Path(model) / SIDECAR).is_file():
        return _open_export(model, engine)
    codec = load_codec(model)
    folder = onnx_cache_dir() / codec.model_id.hex()
    try:
        onnx_codec = OnnxCodec(folder, _onnx_variant(engine))
    except ValueError:
        click.echo(f"exporting the model's streaming graphs to {folder} (once; a few minutes)", err=True)
        from ..export import export_onnx
        export_onnx(codec, folder, variants=("float32", "int8"))
    else:
        if engine != "tvm":
            return onnx_codec
    return _open_export(folder, engine)


def _onnx_variant(engine: str) -> str:
    """The exported graphs' weights an engine runs (TVM compiles the float32 graphs)."""
    return "int8" if engine == "onnx-int8" else "float32"


def _open_export(folder: str | Path, engine: str):
    """The codec of an export folder for ``engine``; for ``tvm``, its graphs are compiled into
    ``folder/tvm`` first if they are not there yet."""
    from ..runtime import OnnxCodec

    if engine != "tvm":
        return OnnxCodec(folder, _onnx_variant(engine))
    from ..tvm_engine import TvmCodec, compile_tvm, compiled

    if not compiled(folder):
        click.echo(f"compiling the streaming graphs with TVM into {Path(folder) / 'tvm'} (once; minutes)", err=True)
        compile_tvm(folder)
    return TvmCodec(folder)

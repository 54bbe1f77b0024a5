"""``lrac-score``: objective scores of decoded speech, stages 6-7 of the recipe, and complexity.

    lrac-score REF DEG [--out DIR] [--jobs N] [--plots]          score decoded audio against references
    lrac-score --model M --testset DIR --bitrate 1 6 --out DIR  code a test set, then score it
    lrac-score --complexity [--config PRESET | --model M] [--json]   (default: the model lrac-encode uses)

REF and DEG are folders (utterance id = file stem) or Kaldi-style ``reference.scp``/``wav.scp``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from ..config import Config, load_config
from .common import DEFAULT_MODEL, check_number, config_options, fail, load_codec, user_errors, \
    version_option

_NUMBER = re.compile(r"^\d+(\.\d+)?(,\d+(\.\d+)?)*$")


class _ScoreCommand(click.Command):
    """Lets ``--bitrate 1 6`` take several values (click options take one value per flag)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--bitrate":
                values = []
                while i + 1 < len(args) and _NUMBER.match(args[i + 1]):
                    values += args[i + 1].split(",")
                    i += 1
                out += [tok for v in values for tok in ("--bitrate", v)] or [arg]
            elif arg.startswith("--bitrate=") and "," in arg:
                out += [tok for v in arg.split("=", 1)[1].split(",") for tok in ("--bitrate", v)]
            else:
                out.append(arg)
            i += 1
        return super().parse_args(ctx, out)


class _Progress:
    """tqdm bars on stderr (silent when stderr is not a terminal), one per named stage."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if name not in self.bars:
            self.bars[name] = tqdm(total=total, desc=name, unit="utt", file=sys.stderr, disable=None,
                                   leave=False)
        self.bars[name].n = done
        self.bars[name].refresh()
        if done >= total:
            self.bars.pop(name).close()

    def stage(self, name: str):
        """A ``(done, total)`` callback for one stage."""
        return lambda done, total: self(name, done, total)


def _effective_config(config: str | None, model: str | None, overrides: tuple[str, ...],
                      options: dict[str, Any]) -> tuple[Config, Any]:
    """The config every setting comes from: the model's (``--model``) or ``--config``'s, then
    ``--set`` overrides, then the explicit command-line options. Returns ``(config, codec | None)``."""
    if config and model:
        raise ValueError("give --config or --model, not both (a model file carries its own config)")
    codec = load_codec(model) if model else None
    cfg = codec.config if codec is not None else load_config(config or "baseline-t1")
    if overrides:
        cfg = cfg.override(list(overrides))
    explicit = {f"score.{k}": v for k, v in options.items() if v is not None}
    if explicit:
        cfg = cfg.override(explicit)
    return cfg, codec


@click.command(cls=_ScoreCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("ref", required=False)
@click.argument("deg", required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write per_utterance.csv, summary.json and summary.md here.")
@click.option("--model", default=None, help="Model file (or pretrained name) to code --testset with.")
@click.option("--testset", default=None, help="Reference folder or reference.scp/wav.scp to code.")
@click.option("--bitrate", "bitrates", type=int, multiple=True,
              help="Bitrate(s) in kbps for --model, e.g. --bitrate 1 6 [default: config score.bitrates_kbps].")
@click.option("--metrics", default=None,
              help="Comma-separated metrics [default: every installed one of pesq_wb, pesq_nb, stoi, "
                   "estoi, si_sdr, mel_distance, lsd, dnsmos, visqol].")
@click.option("--jobs", type=int, default=1, show_default=True, help="Parallel scoring processes.")
@click.option("--max-delay-ms", type=float, default=None,
              help="Largest delay searched and compensated [config score.max_delay_ms].")
@click.option("--plots", is_flag=True, help="Spectrogram PNG per utterance and a summary chart (matplotlib).")
@click.option("--complexity", is_flag=True, help="Print compute, latency and parameters, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --complexity: print JSON instead of a table.")
@config_options
@version_option
@user_errors
def main(ref: str | None, deg: str | None, out_dir: str | None, model: str | None, testset: str | None,
         bitrates: tuple[int, ...], metrics: str | None, jobs: int, max_delay_ms: float | None,
         plots: bool, complexity: bool, as_json: bool, config_name: str | None,
         overrides: tuple[str, ...], print_config: bool) -> None:
    """Score decoded speech against references (PESQ, STOI, SI-SDR, mel distance, LSD, DNSMOS, ...).

    REF and DEG are folders or Kaldi-style scp files; utterances are paired by id."""
    check_number("--max-delay-ms", max_delay_ms, low_inclusive=True)
    check_number("--jobs", jobs, 1, low_inclusive=True)
    options = {"max_delay_ms": max_delay_ms, "bitrates_kbps": list(bitrates) or None}
    if complexity and not config_name and not model:
        model = DEFAULT_MODEL   # describe what lrac-encode uses without --model
    cfg, codec = _effective_config(config_name, model, overrides, options)
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    if complexity:
        from ..codec import Codec

        described = (f"config {config_name} (untrained weights: the figures do not depend on them)"
                     if not model else f"pretrained model {model}" if model in Codec.pretrained_names()
                     else f"model file {model}")
        _complexity(codec, cfg, as_json, described + (f" with {', '.join(overrides)}" if overrides else ""))
        return
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    if codec is not None or testset:
        if ref or deg:
            raise ValueError("give REF DEG, or --model with --testset, not both")
        if codec is None or not testset or not out_dir:
            raise ValueError("coding a test set needs --model, --testset and --out")
        _code_and_score(codec, cfg, testset, Path(out_dir), names, plots, jobs)
    else:
        if not ref or not deg:
            raise ValueError("give REF and DEG (folders or .scp files), or --model with "
                             "--testset; see lrac-score --help")
        _score(ref, deg, cfg, out_dir, names, plots, jobs)


def _complexity(codec: Any, cfg: Config, as_json: bool, described: str) -> None:
    """Print the complexity report of ``codec`` (or of ``cfg``'s model), saying which it describes."""
    from ..eval.complexity import complexity_report, format_complexity

    if codec is None or cfg is not codec.config:   # --set changes the model: build that one
        from ..codec import Codec

        codec = Codec(cfg)
    report = complexity_report(codec)
    if as_json:
        click.echo(json.dumps({"described": described, **report}, indent=2))
    else:
        click.echo(f"complexity of {described}\n{format_complexity(report)}")


def _score(ref: str, deg: str, cfg: Config, out_dir: str | None, names: list[str] | None,
           plots: bool, jobs: int) -> None:
    from ..eval.score import score, write_report

    if plots and not out_dir:
        raise ValueError("--plots needs --out DIR to write the pictures into")
    result = score(ref, deg, names, cfg.score.max_delay_ms, jobs, _Progress().stage("scoring"))
    title = f"lrac-score: {deg} against {ref}"
    if out_dir:
        paths = write_report(out_dir, result, title)
        click.echo(paths["summary.md"].read_text(), nl=False)
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)
        if plots:
            _plots({Path(deg).name or "decoded": result}, Path(out_dir) / "plots")
    else:
        from ..eval.score import summary_markdown

        click.echo(summary_markdown(result, title), nl=False)
    if not result.scored:
        fail(f"no utterance could be scored ({len(result.skipped)} skipped, reasons listed above)")


def _code_and_score(codec: Any, cfg: Config, testset: str, out_dir: Path, names: list[str] | None,
                    plots: bool, jobs: int) -> None:
    from ..eval.score import code_and_score

    runs = code_and_score(codec, testset, out_dir, cfg.score.bitrates_kbps, names,
                          cfg.score.max_delay_ms, jobs, _Progress())
    click.echo((out_dir / "summary.md").read_text(), nl=False)
    click.echo(f"wrote {out_dir / 'summary.md'}, {out_dir / 'summary.json'} and per-bitrate reports "
               f"under {out_dir}/<B>kbps/", err=True)
    if plots:
        _plots({label: run["result"] for label, run in runs.items()}, out_dir / "plots")
    if not any(run["result"].scored for run in runs.values()):
        fail("no utterance could be coded and scored (see the reports for the reasons)")


def _plots(results: dict[str, Any], folder: Path) -> None:
    try:
        from ..eval.plots import plot_summary, plot_utterances, require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        fail(str(exc))
    pictures = plot_utterances(results, folder)
    summary = plot_summary(results, folder / "summary.png")
    click.echo(f"wrote {len(pictures)} spectrogram PNG(s) and {summary}", err=True)


if __name__ == "__main__":
    main()

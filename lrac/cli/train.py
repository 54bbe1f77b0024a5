"""``lrac-train``: the recipe's data stages and the training of an lrac codec.

Stages (``--stage``/``--stop-stage``, numbered as in the ESPnet recipe): 1 check the lists,
2 format speech to 24 kHz wav once (cached in ``OUT/dump`` or ``--cache-dir``), 3 length filter,
5 train. Examples::

    lrac-train --track 1 --data ../shared/data/splits/train.speech.txt \\
               --valid ../shared/data/splits/valid.speech.txt --out exp/t1
    lrac-train --track 2 --data /path/to/lrac_data_generation/data --out exp/t2   # toolkit layout
    torchrun --nproc_per_node 4 -m lrac.cli.train --track 1 --data data/ --out exp/t1

Exit status: 0 when the run reached its step limit or time budget, 130 / 143 when SIGINT / SIGTERM
stopped it (after writing ``last.pt``), 2 for a user error.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from .common import config_options, user_errors, version_option


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--track", type=click.Choice(["1", "2"]), default=None,
              help="1: transparency codec (target = input); 2: enhancement (noisy/reverberant input, "
                   "clean early-reflection target). Sets model.track; the default preset is its shipped "
                   "model (t1 or t2).  [default: the config's]")
@config_options
@click.option("--data", "data_spec", default=None, metavar="DIR_OR_SCP",
              help="Training speech: a folder (recursive), a wav.scp or list file, or the LRAC "
                   "toolkit's data/ folder (then validation, noise and RIR lists are found in it).")
@click.option("--valid", "valid_spec", default=None, metavar="DIR_OR_SCP", help="Validation speech.")
@click.option("--noise", "noise_spec", default=None, metavar="DIR_OR_SCP", help="Noise for Track 2.")
@click.option("--rir", "rir_spec", default=None, metavar="DIR_OR_SCP",
              help="Room impulse responses for Track 2 (default: simulated rooms).")
@click.option("--valid-noise", "valid_noise_spec", default=None, metavar="DIR_OR_SCP",
              help="Noise for validation (default: the toolkit's noise_val.scp, else --noise).")
@click.option("--valid-rir", "valid_rir_spec", default=None, metavar="DIR_OR_SCP",
              help="RIRs for validation (default: the toolkit's rirs_val.scp, else --rir).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Experiment folder: last.pt, best.pt, best/, train.jsonl, dump/.")
@click.option("--max-steps", type=int, default=None,
              help="Stop this invocation at this step (default: train.max_steps); a --resume goes on.")
@click.option("--batch-size", type=int, default=None, help="Global batch size (train.batch_size).")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/last.pt (with its config).")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from the generator + discriminator weights (and config, step) of a "
                   "checkpoint, continuation or model file; optimisers start afresh.")
@click.option("--stage", type=int, default=1, show_default=True, help="First stage to run (1, 2, 3, 5).")
@click.option("--stop-stage", type=int, default=5, show_default=True, help="Last stage to run.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0: torch's default).")
@click.option("--workers", type=click.IntRange(min=0), default=0,
              help="Data worker processes per rank (0: one background thread); GPUs want 4-8.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where stages 1-3 keep their output (default: OUT/dump).")
@click.option("--augment-cache-mb", type=click.FloatRange(min=0), default=2048.0, show_default=True,
              help="Memory per run for augmented Track 2 utterances (about 2 GiB holds the train split).")
@click.option("--device", default=None, help="cpu or cuda[:N] (default: cuda if available).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to train.jsonl).")
@version_option
@user_errors
def main(track: str | None, config_name: str | None, overrides: tuple[str, ...], print_config: bool,
         data_spec: str | None, valid_spec: str | None, noise_spec: str | None, rir_spec: str | None,
         valid_noise_spec: str | None, valid_rir_spec: str | None, out_dir: str | None,
         max_steps: int | None, batch_size: int | None, resume: bool, init_from: str | None,
         stage: int, stop_stage: int, threads: int, workers: int, cache_dir: str | None,
         augment_cache_mb: float, device: str | None, no_progress: bool) -> None:
    """Train a codec for LRAC Track 1 (transparency) or Track 2 (enhancement): check, resample and
    length-filter the data as the ESPnet recipe does (stages 1-3), then train (stage 5; docs/training.md)."""
    import torch

    from ..train.checkpoint import LAST
    from ..train.distributed import init_distributed
    from ..train.setup import (check_memory, data_sources, describe, prepare_data, run_config,
                               training_data)
    from ..train.trainer import Trainer

    if resume and init_from:
        raise click.UsageError("--resume and --init-from exclude each other")
    last = Path(out_dir) / LAST if out_dir else None
    if resume and (last is None or not last.is_file()):
        _echo(f"note: {last or 'OUT/last.pt'} not found, starting a new run")
    source = last if resume and last is not None and last.is_file() else init_from
    extra = list(overrides) + ([f"train.batch_size={batch_size}"] if batch_size is not None else [])
    cfg = run_config(config_name, extra, int(track) if track else None, source, _echo)
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    if not data_spec or not out_dir:
        raise click.UsageError("training needs --data and --out (--print-config alone needs neither)")
    if threads:
        torch.set_num_threads(threads)
    dist_info = init_distributed()
    out = Path(out_dir)
    sources = data_sources(data_spec, valid_spec, noise_spec, rir_spec, valid_noise_spec, valid_rir_spec,
                           cfg.model.track, _echo if dist_info.main else None)
    cache = Path(cache_dir) if cache_dir else out / "dump"
    if stage <= 3 and dist_info.main:   # the main rank prepares; the others read the cache
        from tqdm import tqdm
        progress = None if no_progress else (lambda it: tqdm(it, desc="formatting", unit="file", file=sys.stderr))
        prepare_data(sources, cache, cfg, stage, stop_stage, _echo, progress)
    if dist_info.world > 1:
        torch.distributed.barrier()
    if stop_stage < 5:
        return
    stream, valid = training_data(sources, cache, cfg, dist_info, augment_cache_mb, _echo)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and dist_info.world > 1:
        device = f"cuda:{dist_info.rank % torch.cuda.device_count()}"
    trainer = Trainer(cfg, out, stream, valid, dist_info, device, progress=not no_progress, workers=workers)
    check_memory(trainer.gan, trainer.batch_per_rank, dist_info.world)
    say = _echo if dist_info.main else (lambda message: None)
    if source is not None and source == last:
        trainer.load_checkpoint(last)
        say(f"resumed from {last} at step {trainer.step}")
    elif init_from:
        for line in trainer.load_weights(init_from):
            say(f"starting from {init_from} with a changed model: {line}")
        say(f"started from the weights of {init_from} at step {trainer.step} (new optimisers)")
    limit = max_steps if max_steps is not None else cfg.train.max_steps
    say(describe(cfg, stream, valid, dist_info, device))
    result = trainer.fit(limit, report=say)
    say(f"stopped at step {result['step']} ({result['stopped_by']}); checkpoint {out / LAST}"
        + (f"; best valid mel {result['best']['loss']:.4f} ({out / 'best.pt'})" if result.get("best") else ""))
    if dist_info.world > 1:
        torch.distributed.destroy_process_group()
    if result["stopped_by"] in ("SIGTERM", "SIGINT"):   # a scheduler can tell an interrupted run
        sys.exit(128 + signal.Signals[result["stopped_by"]].value)


if __name__ == "__main__":  # torchrun -m lrac.cli.train ...
    main()

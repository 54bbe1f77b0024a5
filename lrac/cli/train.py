"""``lrac-train``: the recipe's data stages and GAN training of an lrac codec.

Stages (``--stage``/``--stop-stage``, numbered as in the ESPnet recipe): 1 check the lists,
2 format speech to 24 kHz wav once (cached in ``OUT/dump`` or ``data.cache_dir``), 3 length filter,
5 train. Examples::

    lrac-train --track 1 --data ../shared/data/splits/train.speech.txt \\
               --valid ../shared/data/splits/valid.speech.txt --out exp/t1
    lrac-train --track 2 --data /path/to/lrac_data_generation/data --out exp/t2   # toolkit layout
    torchrun --nproc_per_node 4 -m lrac.cli.train --track 1 --data data/ --out exp/t1
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import build_config, config_options, user_errors

# Settings of the machine a run was on, which ``--init-from`` resets to their defaults (``--set`` them).
MACHINE_SETTINGS = (("train", "num_workers"), ("train", "threads"), ("data", "cache_dir"),
                    ("data", "augment_cache_mb"))


def _echo(message: str) -> None:
    click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--track", type=click.Choice(["1", "2"]), required=True,
              help="1: transparency codec (target = input); 2: enhancement (noisy/reverberant input, "
                   "clean early-reflection target).")
@config_options
@click.option("--data", "data_spec", required=True, metavar="DIR_OR_SCP",
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
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Experiment folder: last.pt, best.pt, best/, train.jsonl, dump/.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps (train.max_steps).")
@click.option("--batch-size", type=int, default=None, help="Global batch size (train.batch_size).")
@click.option("--resume", is_flag=True, help="Continue exactly from OUT/last.pt (with its config).")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from the generator + discriminator weights (and config, step) of a "
                   "checkpoint or save_gan_weights file; optimisers start afresh.")
@click.option("--stage", type=int, default=1, show_default=True, help="First stage to run (1, 2, 3, 5).")
@click.option("--stop-stage", type=int, default=5, show_default=True, help="Last stage to run.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (train.threads; 0 = default).")
@click.option("--device", default=None, help="cpu or cuda[:N] (default: cuda if available).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to train.jsonl).")
@user_errors
def main(track: str, config_name: str | None, overrides: tuple[str, ...], print_config: bool,
         data_spec: str, valid_spec: str | None, noise_spec: str | None, rir_spec: str | None,
         valid_noise_spec: str | None, valid_rir_spec: str | None, out_dir: str,
         max_steps: int | None, batch_size: int | None, resume: bool, init_from: str | None,
         stage: int, stop_stage: int,
         threads: int | None, device: str | None, no_progress: bool) -> None:
    """Train a codec for LRAC Track 1 or 2 (spec §3) with the recipe's data stages (spec §7.1)."""
    import torch

    from ..config import Config
    from ..train.augment import Augmenter
    from ..train.data import (ChunkStream, find_toolkit_layout, fixed_chunks, pairs_from, prepared,
                              run_stages)
    from ..train.trainer import Trainer, init_distributed

    out = Path(out_dir)
    last = out / "last.pt"
    extra = list(overrides) + [f"train.track={track}"]
    if max_steps is not None:
        extra.append(f"train.max_steps={max_steps}")
    if batch_size is not None:
        extra.append(f"train.batch_size={batch_size}")
    if threads is not None:
        extra.append(f"train.threads={threads}")
    if resume and init_from:
        raise click.UsageError("--resume and --init-from exclude each other")
    source = last if resume and last.is_file() else Path(init_from) if init_from else None
    if source is not None:
        # The run continues with the config it started with; --set may change train/data settings.
        if not source.is_file():
            raise FileNotFoundError(f"--init-from {source}: file not found")
        saved = torch.load(source, map_location="cpu", weights_only=False)["config"]
        if not resume:  # another machine's data workers, threads and cache folder do not carry over
            defaults = Config()
            for section, key in MACHINE_SETTINGS:
                saved.setdefault(section, {})[key] = getattr(getattr(defaults, section), key)
        cfg = Config.from_dict(saved).override(extra)
        if config_name:
            _echo(f"note: the config stored in {source} is used; --config {config_name} is ignored")
    else:
        if resume:
            _echo(f"note: {last} not found, starting a new run")
        cfg = build_config(config_name, tuple(extra), default=f"baseline-t{track}")
    if print_config:
        click.echo(cfg.to_yaml(), nl=False)
        return
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    dist_info = init_distributed()

    # -- sources: explicit options win over the toolkit layout -----------------------------------
    layout = find_toolkit_layout(data_spec)
    def pick(given: str | None, from_layout: Path | None, fallback: str | None = None) -> str | None:
        return given or (str(from_layout) if from_layout else None) or fallback or None
    sets = {"train": data_spec,
            "valid": pick(valid_spec, layout.valid if layout else None, cfg.data.valid)}
    noise = pick(noise_spec, layout.noise if layout else None, cfg.data.noise)
    rir = pick(rir_spec, layout.rir if layout else None, cfg.data.rir)
    aux = {"noise": noise, "rir": rir,
           "valid_noise": pick(valid_noise_spec, layout.noise_valid if layout else None, noise),
           "valid_rir": pick(valid_rir_spec, layout.rir_valid if layout else None, rir)}
    if cfg.train.track == 1 and not cfg.data.track1_augment:
        aux = {}  # Track 1 is trained on the speech as it is (spec §3.4)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "dump"
    sr = cfg.model.sample_rate

    # -- stages 1-3 (main rank; the others read the cache) ---------------------------------------
    if stage <= 3 and dist_info.main:
        from tqdm import tqdm
        progress = None if no_progress else (lambda it: tqdm(it, desc="formatting", unit="file",
                                                             file=sys.stderr))
        for name, spec in {**sets, **aux}.items():
            if spec:
                run_stages(name, spec, cache, stage, min(stop_stage, 3), sr, cfg.data.min_seconds,
                           cfg.data.max_seconds, speech=name in sets, report=_echo, progress=progress)
    if dist_info.world > 1:
        torch.distributed.barrier()
    if stop_stage < 5:
        return

    def lists(name: str, spec: str | None) -> list:
        if not spec:
            return []
        utts = prepared(cache, name, spec)
        if utts is None:
            from ..train.data import load_source
            if dist_info.main:
                _echo(f"note: no prepared list for {name} (run stages 1-3 to check, convert and "
                      "filter it); using the source as it is")
            utts = load_source(spec)
        return utts

    train_utts = lists("train", sets["train"])
    valid_utts = lists("valid", sets["valid"])
    paths = {name: [u.path for u in lists(name, spec)] for name, spec in aux.items()}
    if cfg.train.track == 2 and not paths.get("noise") and dist_info.main:
        _echo("warning: Track 2 without --noise: inputs are only reverberant")
    if not valid_utts and dist_info.main:
        _echo("warning: no validation set (--valid): no validation loss and no best checkpoints")

    def augmenter(prefix: str) -> Augmenter | None:
        if not aux:
            return None
        return Augmenter(cfg.data, cfg.train.track, paths.get(f"{prefix}noise", []),
                         paths.get(f"{prefix}rir", []), sr, seed=cfg.train.seed)

    stream = ChunkStream(train_utts, cfg.train.segment_samples, pairs_from(augmenter("")),
                         cfg.data.shuffle_chunks, cfg.train.seed, dist_info.rank, dist_info.world, sr,
                         cache_mb=cfg.data.augment_cache_mb)
    valid = None
    if valid_utts:
        valid = fixed_chunks(valid_utts, cfg.train.segment_samples, pairs_from(augmenter("valid_")),
                             cfg.train.valid_batches * cfg.train.batch_size, cfg.train.seed, sr)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and dist_info.world > 1:
        device = f"cuda:{dist_info.rank % torch.cuda.device_count()}"
    trainer = Trainer(cfg, out, stream, valid, dist_info, device, progress=not no_progress)
    trainer.check_memory()
    if resume and last.is_file():
        trainer.load_checkpoint(last)
        if dist_info.main:
            _echo(f"resumed from {last} at step {trainer.step}")
    elif init_from:
        trainer.load_weights(init_from)
        if dist_info.main:
            _echo(f"started from the weights of {init_from} at step {trainer.step} (new optimisers)")
    if dist_info.main:
        _echo(f"training Track {cfg.train.track}: {len(train_utts)} utterances, "
              f"{len(valid_utts)} for validation, batch {cfg.train.batch_size} x "
              f"{cfg.train.segment_samples / sr:.2f} s on {dist_info.world} process(es), {device}")
    result = trainer.fit(cfg.train.max_steps)
    if dist_info.main:
        _echo(f"stopped at step {result['step']}; checkpoint {last}"
              + (f"; best valid mel {result['best']['loss']:.4f} ({out / 'best.pt'})"
                 if result.get("best") else ""))
    if dist_info.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":  # torchrun -m lrac.cli.train ...
    main()

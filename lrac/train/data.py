"""Training data: audio sources, the recipe's data stages, and a resumable stream of 2.6 s chunks.

Sources (``--data``, ``--valid``, ``--noise``, ``--rir`` of ``lrac-train``):

* a list file: Kaldi ``wav.scp`` (``<uid> <path>``) or one path per line. Relative paths are looked up
  next to the list, then in its parent folders (Kaldi lists are relative to the recipe root);
* a folder of audio files, searched recursively (every format soundfile reads, any rate);
* the ``data/`` folder written by the LRAC data-generation toolkit (spec §4): its
  ``speech/wav.scp`` is the training set and :func:`find_toolkit_layout` finds
  ``speech_validation/wav.scp``, ``noise.scp``, ``noise_val.scp``, ``rirs.scp``, ``rirs_val.scp``.

Stages (spec §7.1; numbers as in the ESPnet recipe): 1 :func:`check_entries`, 2 :func:`format_entries`
(24 kHz 16-bit wav, cached under ``cache_dir/org/<set>``), 3 :func:`length_filter` (``cache_dir/<set>``).
A set's cache is found by its entries (:func:`prepared`); a source without one is read as stage 2
would store it (:func:`load_speech`), so a set gives the same samples either way.
A stage never ends a run because of a bad entry: missing, unreadable and silent files are counted
in a :class:`StageReport` and skipped.

:class:`ChunkStream` then augments each utterance (see ``augment.py``), cuts it into ``segment``-sample
chunks with 50 % overlap and a random offset, and draws chunks at random from a shuffle buffer of
``shuffle_chunks`` chunks. The buffer holds *references* (utterance, epoch, offset), not audio, so the
whole position of the stream fits in a checkpoint and a resumed run yields exactly the same batches.
"""

from __future__ import annotations

import hashlib
import io
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from lrac.audio import AudioError, active_power, load_audio, write_audio
from lrac.lists import audio_files, id_of_path, read_scp, write_scp


@dataclass(frozen=True)
class Utterance:
    """One audio file of a set. ``num_samples`` is its length at the training rate, when known."""

    uid: str
    path: str
    num_samples: int | None = None


@dataclass
class StageReport:
    """What a data stage kept and what it skipped (reason -> count, with a few examples)."""

    stage: str
    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(detail)

    def summary(self) -> str:
        """One line, then one indented line per skip reason with up to three examples."""
        lines = [f"{self.stage}: kept {self.kept} of {self.total}"
                 + (f", skipped {sum(self.skipped.values())}" if self.skipped else "")]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  {count} {reason}, e.g. " + "; ".join(self.examples[reason]))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


@dataclass
class ToolkitLayout:
    """The lists of an LRAC data-generation ``data/`` folder (None where a list is absent)."""

    root: Path
    train: Path
    valid: Path | None = None
    noise: Path | None = None
    noise_valid: Path | None = None
    rir: Path | None = None
    rir_valid: Path | None = None


def find_toolkit_layout(path: str | Path) -> ToolkitLayout | None:
    """Recognise the toolkit's ``data/`` folder (given itself or its parent); None otherwise."""
    path = Path(path)
    for root in (path, path / "data"):
        if (root / "speech" / "wav.scp").is_file():
            def opt(rel: str) -> Path | None:
                p = root / rel
                return p if p.is_file() else None
            return ToolkitLayout(root, root / "speech" / "wav.scp", opt("speech_validation/wav.scp"),
                                 opt("noise.scp"), opt("noise_val.scp"), opt("rirs.scp"),
                                 opt("rirs_val.scp"))
    return None


def read_list(path: str | Path) -> list[Utterance]:
    """The utterances of a list file (:func:`lrac.lists.read_scp`); Kaldi pipe commands are kept
    as entries that stage 1 counts and skips."""
    return [Utterance(uid, target) for uid, target in read_scp(path, keep_pipes=True)]


def scan_folder(folder: str | Path) -> list[Utterance]:
    """Every audio file under ``folder`` (recursive, sorted); the uid is the relative path without
    suffix, folders joined by ``_``."""
    folder = Path(folder)
    return [Utterance(id_of_path(f.relative_to(folder).as_posix()), str(f)) for f in audio_files(folder)]


def load_source(spec: str | Path) -> list[Utterance]:
    """Utterances of a list file, a folder, or a toolkit ``data/`` folder (its training speech).

    Raises FileNotFoundError (naming the path) when ``spec`` does not exist."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {spec} (expected a folder of audio files, a "
                                "wav.scp or list file, or the LRAC toolkit's data/ folder)")
    if path.is_dir():
        layout = find_toolkit_layout(path)
        return read_list(layout.train) if layout else scan_folder(path)
    return read_list(path)


# --------------------------------------------------------------------------------------------
# stages 1-3
# --------------------------------------------------------------------------------------------


def _length_at(info: Any, sample_rate: int) -> int:
    """Samples after resampling ``info.frames`` from ``info.samplerate`` to ``sample_rate``."""
    if info.samplerate == sample_rate:
        return int(info.frames)
    return int(math.ceil(info.frames * sample_rate / info.samplerate))  # resample_poly's length


def check_entries(utts: Sequence[Utterance], sample_rate: int = 24000, name: str = "data"
                  ) -> tuple[list[Utterance], StageReport]:
    """Stage 1: keep entries whose file exists and has a readable, non-empty audio header.

    Kept entries get ``num_samples`` (length at ``sample_rate``) from the header."""
    report = StageReport(f"stage 1 (check) {name}", total=len(utts))
    kept = []
    for u in utts:
        if u.path.endswith("|"):
            report.skip("pipe commands (not supported; format the list first)", u.path)
            continue
        if not os.path.isfile(u.path):
            report.skip("missing files", u.path)
            continue
        try:
            info = sf.info(u.path)
        except Exception as exc:  # soundfile raises several types for unreadable files
            report.skip("unreadable files", f"{u.path} ({str(exc).splitlines()[0] if str(exc) else exc})")
            continue
        if info.frames <= 0:
            report.skip("empty files", u.path)
            continue
        kept.append(Utterance(u.uid, u.path, _length_at(info, sample_rate)))
    report.kept = len(kept)
    return kept, report


def pcm16(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio [T]`` as a 16-bit wav holds it (float32 ``k / 32768``), by the same conversion as
    :func:`lrac.audio.write_audio` (libsndfile's), so that a stored file reads back bit for bit."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), int(sample_rate),
             format="WAV", subtype="PCM_16")
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


def load_speech(path: str | Path, sample_rate: int) -> np.ndarray:
    """An utterance ``[T]`` at ``sample_rate`` on the 16-bit grid that stage 2 stores it on: a source
    used as it is (no prepared list) then gives the samples its prepared copy holds. Resampled
    16 kHz speech differs from its 16-bit copy by the rounding alone, but that rounding is the only
    content above 8 kHz, and the validation mel distance (log mels) sees it: 0.54 against 0.62 on
    the same weights. Raises :class:`lrac.audio.AudioError` for a file that cannot be read."""
    audio = load_audio(path, sample_rate, warn_stereo=False)[0]
    try:
        info = sf.info(str(path))
        on_grid = (info.subtype, info.channels, info.samplerate) == ("PCM_16", 1, sample_rate)
    except Exception:  # (load_audio has just read it) the round trip is right for any file
        on_grid = False
    return audio if on_grid else pcm16(audio, sample_rate)   # a prepared file: as it is, at no cost


def _cache_name(path: str) -> str:
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:20] + ".wav"


def save_prepared(folder: str | Path, utts: Sequence[Utterance]) -> None:
    """Write a stage's output into ``folder``: ``wav.scp`` and ``utt2num_samples``."""
    folder = Path(folder)
    write_scp(folder / "wav.scp", [(u.uid, u.path) for u in utts], sort=False)
    write_scp(folder / "utt2num_samples", [(u.uid, u.num_samples) for u in utts], sort=False)


def load_prepared(folder: str | Path) -> list[Utterance]:
    """Read what :func:`save_prepared` wrote (lengths from ``utt2num_samples`` when present)."""
    folder = Path(folder)
    lengths = {}
    if (folder / "utt2num_samples").is_file():
        for line in (folder / "utt2num_samples").read_text().splitlines():
            uid, n = line.split()
            lengths[uid] = int(n) if n != "None" else None
    return [Utterance(u.uid, u.path, lengths.get(u.uid)) for u in read_list(folder / "wav.scp")]


def format_entries(utts: Sequence[Utterance], out_dir: str | Path, sample_rate: int = 24000,
                   name: str = "data", progress: Callable[[Iterable], Iterable] | None = None
                   ) -> tuple[list[Utterance], StageReport]:
    """Stage 2: decode, downmix and resample every entry to ``sample_rate`` 16-bit wav, once.

    Files go to ``out_dir/wav/<hash of source path, size, mtime>.wav``; an existing one is reused,
    so re-running the stage only converts new or changed files. Unreadable and silent entries are
    skipped. Writes ``out_dir/wav.scp`` and ``out_dir/utt2num_samples``."""
    out_dir = Path(out_dir).resolve()  # absolute paths in wav.scp: valid from any working folder
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    report = StageReport(f"stage 2 (format to {sample_rate} Hz) {name}", total=len(utts))
    kept = []
    for u in (progress(utts) if progress else utts):
        try:
            target = out_dir / "wav" / _cache_name(u.path)
        except OSError:
            report.skip("missing files", u.path)
            continue
        if target.is_file():
            try:
                kept.append(Utterance(u.uid, str(target), sf.info(str(target)).frames))
                continue
            except Exception:  # a truncated cache file from a killed run: convert again
                target.unlink()
        try:
            audio = load_speech(u.path, sample_rate)
        except AudioError as exc:
            report.skip("unreadable files", str(exc))
            continue
        if active_power(audio, sample_rate) <= 0 or np.max(np.abs(audio)) < 1 / 32768:
            report.skip("silent files", u.path)
            continue
        tmp = target.with_name(f".{target.stem}.tmp.wav")
        write_audio(tmp, audio, sample_rate)
        os.replace(tmp, target)
        kept.append(Utterance(u.uid, str(target), len(audio)))
    report.kept = len(kept)
    save_prepared(out_dir, kept)
    return kept, report


def length_filter(utts: Sequence[Utterance], sample_rate: int = 24000, min_seconds: float = 2.9,
                  max_seconds: float = 240.0, name: str = "data") -> tuple[list[Utterance], StageReport]:
    """Stage 3: keep ``min_seconds < length < max_seconds`` (strict, as the recipe's stage 3).

    Entries of unknown length are measured from their header first."""
    report = StageReport(f"stage 3 (length {min_seconds:g}-{max_seconds:g} s) {name}", total=len(utts))
    kept = []
    lo, hi = min_seconds * sample_rate, max_seconds * sample_rate
    for u in utts:
        n = u.num_samples
        if n is None:
            try:
                n = _length_at(sf.info(u.path), sample_rate)
            except Exception:
                report.skip("unreadable files", u.path)
                continue
        if n <= lo:
            report.skip(f"shorter than {min_seconds:g} s", f"{u.uid} ({n / sample_rate:.2f} s)")
        elif n >= hi:
            report.skip(f"longer than {max_seconds:g} s", f"{u.uid} ({n / sample_rate:.1f} s)")
        else:
            kept.append(Utterance(u.uid, u.path, n))
    report.kept = len(kept)
    return kept, report


# --------------------------------------------------------------------------------------------
# chunk stream
# --------------------------------------------------------------------------------------------

# Functions (speech [T], rng) -> (input [T], target [T]); an Augmenter fits via ``pairs_from``.
PairFn = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def pairs_from(augmenter: Any | None) -> PairFn:
    """Adapt an :class:`lrac.train.augment.Augmenter` (or None: target = input) to a :data:`PairFn`."""
    if augmenter is None:
        return lambda speech, rng: (speech, speech)

    def fn(speech: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        out = augmenter(speech, rng)
        return out.input, out.target
    return fn


def chunk_starts(length: int, segment: int, rng: np.random.Generator, shift_ratio: float = 0.5
                 ) -> list[int]:
    """Start samples of the chunks of a ``length``-sample utterance.

    Chunks are ``segment`` long, ``segment * shift_ratio`` apart, after a random offset that uses the
    slack at the end; an utterance shorter than one chunk gives one chunk at 0 (zero-padded)."""
    if length <= segment:
        return [0]
    shift = max(1, int(segment * shift_ratio))
    n = (length - segment) // shift + 1
    offset = int(rng.integers(0, length - segment - (n - 1) * shift + 1))
    return [offset + i * shift for i in range(n)]


def _pair_bytes(pair: tuple[np.ndarray, np.ndarray]) -> int:
    """Memory of an ``(input, target)`` pair (Track 1's target is its input: counted once)."""
    return pair[0].nbytes + (0 if pair[1] is pair[0] else pair[1].nbytes)


class ChunkStream:
    """Endless, deterministic, resumable stream of ``(input, target)`` chunks ``[segment]``.

    Epoch ``e`` visits this rank's share of a seeded permutation of the utterances (rank ``r`` of
    ``w`` takes every ``w``-th). Each utterance is augmented with a generator seeded by
    ``(seed, e, utterance)``, cut by :func:`chunk_starts`, and its chunk references join the shuffle
    buffer; once the buffer holds ``buffer_size`` references, each draw takes a random one out.
    Because audio is rebuilt from its reference on demand, the state (:meth:`state_dict`) is only
    the epoch, the cursor, the references and the draw generator. Rebuilding is the costly part
    (decoding and, for Track 2, noise and reverb on the whole utterance), so augmented utterances
    are kept in a least-recently-used cache of ``cache_mb``: with 32 utterances kept, a Track 2
    stream made 104 chunks/s on one thread; with its whole share kept, 711 over two epochs from a
    cold cache (benchmarks/data_speed.py). The cache changes the speed only, never the chunks.

    Args:
        utts: the utterances (``num_samples`` at ``sample_rate`` when known, else read from the header).
        segment: chunk length in samples (62400 = 2.6 s).
        pairs: makes ``(input, target)`` from clean speech; see :func:`pairs_from`.
        buffer_size: shuffle-buffer size in chunks (12000 in the baseline).
        seed, rank, world: determinism and sharding across DDP ranks.
        cache_mb: memory for augmented utterances (shared out among the data workers' shards).
    """

    def __init__(self, utts: Sequence[Utterance], segment: int, pairs: PairFn | None = None,
                 buffer_size: int = 12000, seed: int = 0, rank: int = 0, world: int = 1,
                 sample_rate: int = 24000, shift_ratio: float = 0.5, cache_mb: float = 2048.0) -> None:
        if not utts:
            raise ValueError("no utterances to train on (every entry was skipped or the source is empty)")
        if len(utts) < world:
            raise ValueError(f"{len(utts)} utterance(s) cannot be shared by {world} ranks")
        self._args = dict(segment=segment, pairs=pairs, buffer_size=buffer_size, seed=seed,
                          sample_rate=sample_rate, shift_ratio=shift_ratio,
                          cache_mb=cache_mb)
        self.utts = list(utts)
        self.segment = int(segment)
        self.pairs = pairs or pairs_from(None)
        self.buffer_size = max(1, int(buffer_size))
        self.seed, self.rank, self.world = int(seed), int(rank), int(world)
        self.sample_rate = sample_rate
        self.shift_ratio = shift_ratio
        self.skipped: Counter = Counter()  # uid -> times it could not be loaded
        self._bad: set[int] = set()
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_budget = int(cache_mb * 2**20)  # bytes
        self._cache_bytes = 0
        self.epoch, self.cursor = 0, 0
        self.buffer: list[tuple[int, int, int]] = []   # (utterance index, epoch, start sample)
        self.rng = np.random.default_rng([self.seed, self.rank, 7])
        self._order = self._epoch_order(0)

    def shard(self, k: int, n: int) -> "ChunkStream":
        """A fresh stream over the ``k``-th of ``n`` parts of this rank's utterances (rank
        ``rank * n + k`` of ``world * n``), for data worker ``k`` (:class:`WorkerPrefetcher`)."""
        args = dict(self._args, cache_mb=self._args["cache_mb"] / n)
        return ChunkStream(self.utts, rank=self.rank * n + k, world=self.world * n, **args)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Position of the stream (small: no audio)."""
        return {"epoch": self.epoch, "cursor": self.cursor,
                "buffer": np.asarray(self.buffer, dtype=np.int64).reshape(-1, 3),
                "rng": self.rng.bit_generator.state, "num_utts": len(self.utts),
                "rank": self.rank, "world": self.world}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken (same utterance list required)."""
        if state["num_utts"] != len(self.utts) or state["world"] != self.world:
            raise ValueError(f"data position was saved for {state['num_utts']} utterances on "
                             f"{state['world']} rank(s); this run has {len(self.utts)} on {self.world}. "
                             "Resume with the same data and process count.")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.buffer = [tuple(int(v) for v in row) for row in np.asarray(state["buffer"])]
        self.rng.bit_generator.state = state["rng"]
        self._order = self._epoch_order(self.epoch)

    # -- internals ----------------------------------------------------------------------------

    def _epoch_order(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch, 11]).permutation(len(self.utts))
        return order[self.rank::self.world]

    def _utt_rng(self, index: int, epoch: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index, purpose])

    def _length(self, index: int) -> int | None:
        u = self.utts[index]
        if u.num_samples is not None:
            return u.num_samples
        try:
            n = _length_at(sf.info(u.path), self.sample_rate)
        except Exception:
            return None
        self.utts[index] = Utterance(u.uid, u.path, n)
        return n

    def _mark_bad(self, index: int, reason: str) -> None:
        if index not in self._bad:
            self._bad.add(index)
            warnings.warn(f"skipping {self.utts[index].path}: {reason} "
                          f"({len(self._bad)} utterance(s) skipped so far)", stacklevel=3)
        self.skipped[self.utts[index].uid] += 1

    def _fill_one(self) -> None:
        """Add the chunks of the next utterance of this epoch (moving to the next epoch at the end)."""
        if self.cursor >= len(self._order):
            self.epoch += 1
            self.cursor = 0
            self._order = self._epoch_order(self.epoch)
        index = int(self._order[self.cursor])
        self.cursor += 1
        if index in self._bad:
            return
        length = self._length(index)
        if length is None:
            self._mark_bad(index, "cannot read its header")
            return
        for start in chunk_starts(length, self.segment, self._utt_rng(index, self.epoch, 0),
                                  self.shift_ratio):
            self.buffer.append((index, self.epoch, start))

    def _pair(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray] | None:
        key = (index, epoch)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            speech = load_speech(self.utts[index].path, self.sample_rate)
        except AudioError as exc:
            self._mark_bad(index, str(exc))
            return None
        if active_power(speech, self.sample_rate) <= 0:
            self._mark_bad(index, "silent")
            return None
        pair = self.pairs(speech, self._utt_rng(index, epoch, 1))
        self._cache[key] = pair
        self._cache_bytes += _pair_bytes(pair)
        while self._cache_bytes > self._cache_budget and len(self._cache) > 1:  # keep the newest
            self._cache_bytes -= _pair_bytes(self._cache.popitem(last=False)[1])
        return pair

    def _cut(self, audio: np.ndarray, start: int) -> np.ndarray:
        out = audio[start:start + self.segment]
        if len(out) < self.segment:
            out = np.pad(out, (0, self.segment - len(out)))
        return out

    # -- public -------------------------------------------------------------------------------

    def next_chunk(self) -> tuple[np.ndarray, np.ndarray]:
        """The next ``(input, target)`` pair, each ``[segment]`` float32."""
        idle = 0  # fills in a row that added nothing: all utterances unusable
        while True:
            while len(self.buffer) < self.buffer_size:
                # at the end of an epoch, drain the buffer before starting the next one
                if self.cursor >= len(self._order) and self.buffer:
                    break
                before = len(self.buffer)
                self._fill_one()
                idle = idle + 1 if len(self.buffer) == before else 0
                if idle > 2 * len(self._order) + 2:
                    raise RuntimeError("no usable audio: every utterance failed to load "
                                       f"({len(self._bad)} of {len(self.utts)} skipped)")
            pick = int(self.rng.integers(0, len(self.buffer)))
            self.buffer[pick], self.buffer[-1] = self.buffer[-1], self.buffer[pick]
            index, epoch, start = self.buffer.pop()
            pair = self._pair(index, epoch)
            if pair is not None:
                return self._cut(pair[0], start), self._cut(pair[1], start)

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)``, each ``[batch_size, 1, segment]`` float32."""
        pairs = [self.next_chunk() for _ in range(batch_size)]
        inp = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        tgt = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        return inp, tgt


class Prefetcher:
    """Prepares the next batches of a :class:`ChunkStream` in a background thread.

    Decoding and augmentation overlap with the training step. :meth:`state_dict` returns the stream
    position right after the last batch handed out, so a checkpoint never skips or repeats a batch.
    """

    def __init__(self, stream: ChunkStream, batch_size: int, depth: int = 2) -> None:
        self.stream = stream
        self.batch_size = batch_size
        self._state = _copy_state(stream.state_dict())
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.stream.next_batch(self.batch_size)
                _put_until_stopped(self._queue, (batch, _copy_state(self.stream.state_dict())), self._stop)
        except BaseException as exc:  # hand the error to the consumer instead of dying silently
            self._queue.put(exc)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(input, target)`` batch, each ``[B, 1, segment]``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="lrac-data")
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def state_dict(self) -> dict[str, Any]:
        return _copy_state(self._state)

    @property
    def skipped_utterances(self) -> int:
        """Utterances that could not be used so far."""
        return len(self.stream.skipped)

    def close(self) -> None:
        """Stop the thread (the stream is left somewhere ahead of :meth:`state_dict`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class WorkerPrefetcher:
    """Batches prepared by ``len(streams)`` worker processes, taken from each in turn.

    Reading, resampling and augmenting audio runs at a few hundred audio seconds per second on one
    core (Track 2 with rooms and noise: about 150), which a GPU outruns; ``lrac-train --workers``
    processes share the work. Worker ``k`` owns shard ``k`` of the rank's utterances
    (:meth:`ChunkStream.shard`), so the batch sequence depends only on the number of workers and
    resumes exactly: :meth:`state_dict` holds every worker's stream position after its last batch
    handed out, and whose turn is next. Workers are forked on the first :meth:`next`.
    """

    def __init__(self, streams: Sequence[ChunkStream], batch_size: int, turn: int = 0,
                 depth: int = 2) -> None:
        if "fork" not in mp.get_all_start_methods():
            raise RuntimeError("--workers > 0 needs processes started by fork (Linux, macOS); "
                               "use --workers 0 here")
        self.streams = list(streams)
        self.batch_size, self.depth = batch_size, depth
        self.turn = turn % len(self.streams)
        self._states = [_copy_state(s.state_dict()) for s in self.streams]
        self._skipped = [len(s.skipped) for s in self.streams]
        self._procs: list[Any] = []
        self._queues: list[Any] = []
        self._stop: Any = None

    def _start(self) -> None:
        ctx = mp.get_context("fork")
        self._stop = ctx.Event()
        for k, stream in enumerate(self.streams):
            q = ctx.Queue(maxsize=self.depth)
            proc = ctx.Process(target=_worker_loop, args=(stream, self.batch_size, q, self._stop),
                               daemon=True, name=f"lrac-data-{k}")
            proc.start()
            self._queues.append(q)
            self._procs.append(proc)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(input, target)`` batch, each ``[B, 1, segment]``."""
        if not self._procs:
            self._start()
        k = self.turn
        while True:
            try:
                item = self._queues[k].get(timeout=1.0)
                break
            except queue.Empty:
                if not self._procs[k].is_alive():
                    raise RuntimeError(f"data worker {k} stopped (exit code {self._procs[k].exitcode})")
        if isinstance(item, str):  # the worker's error, as text (exceptions may not pickle)
            raise RuntimeError(f"data worker {k}: {item}")
        inp, tgt, self._states[k], self._skipped[k] = item
        self.turn = (k + 1) % len(self.streams)
        return torch.from_numpy(inp), torch.from_numpy(tgt)

    def state_dict(self) -> dict[str, Any]:
        return {"workers": [_copy_state(s) for s in self._states], "turn": self.turn}

    @property
    def skipped_utterances(self) -> int:
        return sum(self._skipped)   # shards are disjoint

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        for proc in self._procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs, self._queues = [], []


def _worker_loop(stream: ChunkStream, batch_size: int, out: Any, stop: Any) -> None:
    """Body of a :class:`WorkerPrefetcher` process: batches of ``stream`` as numpy, with the
    stream position after each, until ``stop`` is set."""
    # the trainer's handlers (checkpoint on SIGTERM / Ctrl-C) are inherited by fork: a worker
    # must die on terminate() and leave Ctrl-C to the trainer, which stops it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        while not stop.is_set():
            inp, tgt = stream.next_batch(batch_size)
            _put_until_stopped(out, (inp.numpy(), tgt.numpy(), stream.state_dict(), len(stream.skipped)), stop)
        out.cancel_join_thread()   # stopped: exit without waiting for a batch nobody will read
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def make_prefetcher(stream: ChunkStream, batch_size: int, workers: int = 0,
                    state: dict[str, Any] | None = None) -> Prefetcher | WorkerPrefetcher:
    """The batch source of a training run: a background thread over ``stream`` (``workers`` 0) or
    ``workers`` processes over its shards; ``state`` (a ``state_dict()`` of the same kind) resumes."""
    saved_workers = len(state["workers"]) if state is not None and "workers" in state else 0
    if state is not None and saved_workers != workers:
        raise ValueError(f"the data position was saved with {saved_workers} data worker(s) (--workers); "
                         f"this run has {workers}: resume with the same number of data workers")
    if not workers:
        if state is not None:
            stream.load_state_dict(state)
        return Prefetcher(stream, batch_size)
    shards = [stream.shard(k, workers) for k in range(workers)]
    if state is not None:
        for shard, shard_state in zip(shards, state["workers"]):
            shard.load_state_dict(shard_state)
    return WorkerPrefetcher(shards, batch_size, turn=state["turn"] if state is not None else 0)


def _put_until_stopped(out: Any, item: Any, stop: Any) -> None:
    """Put ``item`` into the bounded queue ``out`` (thread or process queue), waiting while it is
    full, unless ``stop`` (a thread or process event) is set first."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["buffer"] = np.array(state["buffer"], copy=True)
    out["rng"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state["rng"].items()}
    return out


def fixed_chunks(utts: Sequence[Utterance], segment: int, pairs: PairFn | None = None,
                 max_chunks: int = 64, seed: int = 0, sample_rate: int = 24000
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set: up to ``max_chunks`` non-overlapping chunks, the same on every call.

    Utterances are visited in order and cut without overlap from their start; augmentation uses a
    generator seeded by ``(seed, utterance)``. Returns ``(input, target)``, each ``[N, 1, segment]``."""
    pairs = pairs or pairs_from(None)
    inputs, targets = [], []
    for i, u in enumerate(utts):
        if len(inputs) >= max_chunks:
            break
        try:
            speech = load_speech(u.path, sample_rate)
        except AudioError as exc:
            warnings.warn(f"validation: skipping {exc}", stacklevel=2)
            continue
        inp, tgt = pairs(speech, np.random.default_rng([seed, i, 3]))
        for start in range(0, max(1, len(inp) - segment + 1), segment):
            if len(inputs) >= max_chunks:
                break
            piece_in, piece_tgt = inp[start:start + segment], tgt[start:start + segment]
            pad = segment - len(piece_in)
            inputs.append(np.pad(piece_in, (0, pad)))
            targets.append(np.pad(piece_tgt, (0, pad)))
    if not inputs:
        raise ValueError("no usable validation audio")
    return (torch.from_numpy(np.stack(inputs))[:, None], torch.from_numpy(np.stack(targets))[:, None])


# --------------------------------------------------------------------------------------------
# the recipe's data stages over named sets
# --------------------------------------------------------------------------------------------

STAGE_DIRS = {1: "checked", 2: "org", 3: ""}  # cache_dir/<STAGE_DIRS[s]>/<set> holds stage s's output


def _stage_dir(cache_dir: Path, stage: int, name: str) -> Path:
    return cache_dir / STAGE_DIRS[stage] / name if STAGE_DIRS[stage] else cache_dir / name


def _source_key(spec: str | Path) -> tuple[str, str | None]:
    """What identifies a set's source: its resolved path, and a digest of its entries (uid and
    audio path, in order; None when the source cannot be read)."""
    try:
        utts = load_source(spec)
    except (OSError, ValueError):
        utts = None
    digest = None if utts is None else hashlib.sha1(
        "".join(f"{u.uid}\t{u.path}\n" for u in utts).encode()).hexdigest()
    return str(Path(spec).expanduser().resolve()), digest


def _save_stage(folder: Path, utts: Sequence[Utterance], key: tuple[str, str | None]) -> None:
    save_prepared(folder, utts)
    (folder / "source").write_text(f"{key[0]}\nentries {key[1]}\n")


def _cached(cache_dir: Path, stage: int, name: str, key: tuple[str, str | None]) -> list[Utterance] | None:
    """Stage ``stage``'s cached output for set ``name`` if it was made from the source of ``key``
    (:func:`_source_key`): one with the same entries, whatever its file is called (a cache of an
    earlier lrac, without the digest: the same path)."""
    folder = _stage_dir(cache_dir, stage, name)
    source = folder / "source"
    if not source.is_file():
        return None
    lines = source.read_text().splitlines()
    if len(lines) > 1:
        same = key[1] is not None and lines[1] == f"entries {key[1]}"
    else:
        same = lines[:1] == [key[0]]
    return load_prepared(folder) if same else None


def prepared(cache_dir: str | Path, name: str, spec: str | Path) -> list[Utterance] | None:
    """The output of the latest stage (3, else 2, else 1) already run for set ``name`` from a
    source with the entries of ``spec`` (the same list under another name finds it), or None. A
    cache made from other entries is ignored."""
    key = _source_key(spec)
    for stage in (3, 2, 1):
        utts = _cached(Path(cache_dir), stage, name, key)
        if utts is not None:
            return utts
    return None


def run_stages(name: str, spec: str | Path, cache_dir: str | Path, stage: int = 1, stop_stage: int = 3,
               sample_rate: int = 24000, min_seconds: float = 2.9, max_seconds: float = 240.0,
               speech: bool = True, report: Callable[[str], None] = print,
               progress: Callable[[Iterable], Iterable] | None = None) -> list[Utterance]:
    """Run stages ``stage..stop_stage`` of 1 (check), 2 (format + cache), 3 (length filter) on a set.

    Noise and RIR sets (``speech=False``) only go through stage 1: they are resampled when loaded and
    never length-filtered. A stage that is not run takes its input from the cache of the stage before
    (or the raw source). Each stage's report goes to ``report``; its output is cached under
    ``cache_dir`` (see :func:`prepared`). Returns the set's utterances after the last stage run."""
    cache_dir = Path(cache_dir)
    last = stop_stage if speech else min(stop_stage, 1)
    key = _source_key(spec)
    utts: list[Utterance] | None = None
    for earlier in range(min(stage - 1, 3), 0, -1):
        utts = _cached(cache_dir, earlier, name, key)
        if utts is not None:
            break
    if utts is None:
        utts = load_source(spec)
    for s in range(stage, last + 1):
        if s == 1:
            utts, rep = check_entries(utts, sample_rate, name)
        elif s == 2:
            utts, rep = format_entries(utts, _stage_dir(cache_dir, 2, name), sample_rate, name, progress)
        elif s == 3:
            utts, rep = length_filter(utts, sample_rate, min_seconds, max_seconds, name)
        else:
            continue
        _save_stage(_stage_dir(cache_dir, s, name), utts, key)
        report(rep.summary())
    return utts

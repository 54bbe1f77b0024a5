"""Read, check, downmix, resample and write audio. Every audio error message of lrac lives here.

Arrays are float32 numpy, mono ``[T]`` in [-1, 1] unless said otherwise. Imports nothing of lrac.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf


# Below this rate speech is not intelligible; a header saying 1 Hz is a broken or crafted file.
MIN_SAMPLE_RATE_HZ = 8000
# Samples read, checked and resampled at a time (2.7 s at 24 kHz).
BLOCK_SAMPLES = 1 << 16
# Formats lrac writes its 16-bit PCM output in, and the rates it writes: below 8 kHz speech is not
# intelligible, and a resampler asked for GHz would run out of memory.
OUTPUT_SUFFIXES = (".wav", ".flac")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")   # no name for a bitstream
OUTPUT_RATES_HZ = (8000, 384000)
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                 "ULAW": 1, "ALAW": 1}


class AudioError(ValueError):
    """Audio that cannot be used; the message is one line naming the file and the problem."""


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _polyphase(rate_in: int, rate_out: int) -> tuple[int, int]:
    ratio = Fraction(int(rate_out), int(rate_in))
    return ratio.numerator, ratio.denominator


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy ``resample_poly``, Kaiser window).

    Args:
        audio: ``[..., T]`` float array at ``rate_in`` Hz.
    Returns:
        ``[..., ceil(T * rate_out / rate_in)]`` float32 at ``rate_out`` Hz.
    """
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    # imported here: scipy.signal takes about a second to import, which every command would pay
    from scipy.signal import resample_poly

    up, down = _polyphase(rate_in, rate_out)
    out = resample_poly(np.asarray(audio, dtype=np.float64), up, down, axis=-1)
    return out.astype(np.float32)


class StreamResampler:
    """:func:`resample` of mono audio block by block, in memory that does not grow with the length.

    ``push(block [n])`` returns the output samples that no later input changes; ``flush()`` the
    rest. Together they equal :func:`resample` of the whole signal: the same filter (the one scipy's
    ``resample_poly`` designs) over the same samples, keeping only the filter's span of past input.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.up, self.down = _polyphase(rate_in, rate_out)
        self.identity = self.up == self.down
        if self.identity:
            return
        from scipy.signal import firwin   # imported here: see resample

        half_len = 10 * max(self.up, self.down)
        pre_pad = self.down - half_len % self.down
        taps = firwin(2 * half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
        self.taps = np.concatenate([np.zeros(pre_pad), taps])   # as resample_poly centres its output
        self.skip = (half_len + pre_pad) // self.down              # outputs it removes at the start
        self.buffer = np.zeros(0)     # input samples from index `start` on (start: a multiple of down)
        self.start = 0
        self.n_in = 0
        self.n_out = 0                # outputs returned so far

    def _outputs(self, end: int) -> np.ndarray:
        """Outputs ``n_out .. end-1``, computed from the buffer (zeros after its last sample)."""
        from scipy.signal import upfirdn

        if end <= self.n_out:
            return np.zeros(0, dtype=np.float32)
        full = upfirdn(self.taps, self.buffer, self.up, self.down) if len(self.buffer) else np.zeros(0)
        first = self.n_out + self.skip - self.start * self.up // self.down
        out = np.zeros(end - self.n_out)
        got = full[first:first + len(out)]
        out[:len(got)] = got
        self.n_out = end
        # keep the input the next output still needs (its filter span), from a multiple of down
        need = ((self.n_out + self.skip) * self.down - len(self.taps) + 1) // self.up
        drop = max(0, min(need, self.n_in) // self.down * self.down - self.start)
        self.buffer, self.start = self.buffer[drop:], self.start + drop
        return out.astype(np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float64).reshape(-1)
        if self.identity:
            return block.astype(np.float32)
        self.buffer = np.concatenate([self.buffer, block])
        self.n_in += len(block)
        # output n needs input up to sample ((n + skip) * down) // up: ready once that was pushed
        return self._outputs(max(0, (self.n_in * self.up - 1) // self.down - self.skip + 1))

    def flush(self) -> np.ndarray:
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        return self._outputs(-(-self.n_in * self.up // self.down))

def check_waveform(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Refuse empty audio and audio with NaN or infinite samples; return it as float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or audio.shape[-1] == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.all(np.isfinite(audio)):
        bad = int(np.sum(~np.isfinite(audio)))
        raise AudioError(f"{name}: {bad} sample(s) are NaN or infinite")
    return audio


def check_sample_rate(rate: float, name: str = "audio") -> None:
    """Refuse a sample rate below :data:`MIN_SAMPLE_RATE_HZ` (a header saying 1 Hz, for example)."""
    if not rate >= MIN_SAMPLE_RATE_HZ:
        raise AudioError(f"{name}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE_HZ} Hz (too low for speech)")


def full_scale_warning(name: str, peak: float, at_s: float | None = None) -> str:
    where = f" at {at_s:.2f} s" if at_s is not None else ""
    return f"{name}: samples above full scale (up to {peak:.3g}{where}); clipped to [-1, 1]"


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """``(bytes the WAV header's data chunk declares, bytes the file holds)`` when the file is
    shorter than its header says, else None. Only RIFF/WAVE files; a size of 0 or 0xFFFFFFFF (what
    streaming writers leave) is not a claim."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            while chunk := f.read(8):
                if len(chunk) < 8:
                    return None
                declared = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    present = size - f.tell()
                    return (declared, present) if 0 < declared != 0xFFFFFFFF and declared > present else None
                f.seek(declared + declared % 2, 1)
    except OSError:
        return None
    return None


class AudioReader:
    """An audio file read block by block as mono float32 at ``rate``: memory does not grow with
    the file's length.

    Opening checks what can be checked without reading the samples (missing file, folder,
    unreadable format, a sample rate below 8 kHz) and warns about a WAV shorter than its header
    says. :meth:`blocks` downmixes (warning once about several channels), refuses NaN/inf samples,
    clips samples above full scale (warning once) and resamples to ``sample_rate``.

    Attributes:
        rate: the rate of the blocks (``sample_rate`` if given, else the file's).
        num_samples: the number of samples the blocks will hold (from the file's header).
    """

    def __init__(self, path: str | Path, sample_rate: int | None = None, warn_stereo: bool = True,
                 block_samples: int = BLOCK_SAMPLES) -> None:
        path = Path(path)
        self.name = str(path)
        if not path.exists():
            raise AudioError(f"{path}: file not found")
        if path.is_dir():
            raise AudioError(f"{path}: is a folder, expected an audio file")
        try:
            self.file = sf.SoundFile(str(path))
        except Exception as exc:  # soundfile raises several types for bad files
            raise AudioError(f"{path}: cannot read audio ({_reason(exc)})") from None
        self.file_rate = int(self.file.samplerate)
        try:
            check_sample_rate(self.file_rate, self.name)
        except AudioError:
            self.file.close()
            raise
        self.rate = int(sample_rate or self.file_rate)
        self.warn_stereo = warn_stereo
        self.block_samples = block_samples
        frames = max(0, int(self.file.frames))
        self.num_samples = -(-frames * self.rate // self.file_rate)
        shortfall = _wav_shortfall(path)
        if shortfall:
            width = self.file.channels * max(1, _SAMPLE_BYTES.get(self.file.subtype, 2))
            warnings.warn(f"{path}: shorter than its header says ({shortfall[1] // width} of "
                          f"{shortfall[0] // width} frames); using the {shortfall[1] // width} there",
                          stacklevel=2)

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks ``[n]`` at :attr:`rate`, in order; :class:`AudioError` for a file
        without samples or with NaN/inf ones, or one that fails while being read."""
        resampler = StreamResampler(self.file_rate, self.rate)
        read = 0
        clipped = False
        pieces = self.file.blocks(self.block_samples, dtype="float32", always_2d=True)
        while True:
            try:
                data = next(pieces)
            except StopIteration:
                break
            except Exception as exc:   # e.g. a FLAC file cut in the middle
                raise AudioError(f"{self.name}: cannot read audio ({_reason(exc)})") from None
            if data.shape[1] > 1:
                if self.warn_stereo and read == 0:
                    warnings.warn(f"{self.name}: {data.shape[1]} channels, averaged to mono", stacklevel=2)
                data = data.mean(axis=1, keepdims=True)
            block = data[:, 0]
            finite = np.isfinite(block)
            if not finite.all():
                raise AudioError(f"{self.name}: {int(np.sum(~finite))} sample(s) are NaN or infinite "
                                 f"(first at {(read + int(np.argmin(finite))) / self.file_rate:.2f} s)")
            peak = float(np.max(np.abs(block))) if len(block) else 0.0
            if peak > 1.0:
                if not clipped:
                    at = (read + int(np.argmax(np.abs(block) > 1.0))) / self.file_rate
                    warnings.warn(full_scale_warning(self.name, peak, at), stacklevel=2)
                    clipped = True
                block = np.clip(block, -1.0, 1.0)
            read += len(block)
            out = resampler.push(block)
            if len(out):
                yield out
        if read == 0:
            raise AudioError(f"{self.name}: empty audio (0 samples)")
        tail = resampler.flush()
        if len(tail):
            yield tail

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_audio(path: str | Path, sample_rate: int | None = None, warn_stereo: bool = True
               ) -> tuple[np.ndarray, int]:
    """Read any file soundfile reads, as mono float32 (the whole of :class:`AudioReader`).

    Multi-channel audio is averaged to mono (with a warning). With ``sample_rate`` the audio is
    resampled to it. Raises :class:`AudioError` for a missing, unreadable, empty or non-finite file
    or one below 8 kHz; samples above full scale are clipped with a warning.

    Returns:
        ``(audio [T], rate)`` where rate is ``sample_rate`` if given, else the file's rate.
    """
    with AudioReader(path, sample_rate, warn_stereo) as reader:
        blocks = list(reader.blocks())
        return (blocks[0] if len(blocks) == 1 else np.concatenate(blocks)), reader.rate


def check_output_path(path: str | Path, suffixes: tuple[str, ...] | None = OUTPUT_SUFFIXES,
                      source: str | Path | None = None) -> Path:
    """Refuse, before any work, an output file that could not be written: an existing folder, an
    extension not in ``suffixes`` (None: any), the input file ``source`` itself, a place where no
    file can be created. Creates nothing (a probe file is removed at once)."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, expected a file name")
    if source is not None and path.exists() and Path(source).exists() and os.path.samefile(path, source):
        raise AudioError(f"{path}: is the input file too; writing it would destroy the input")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        allowed = " or ".join(suffixes)
        what = f"'{path.suffix}' files cannot be written" if path.suffix else "has no file extension"
        raise AudioError(f"{path}: {what} (the output is 16-bit PCM: use {allowed})")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise AudioError(f"{path}: cannot create it ({folder} is not a folder)")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise AudioError(f"{path}: cannot write into {folder} ({exc.strerror or _reason(exc)})") from None
    return path


def check_bitstream_path(path: str | Path, source: str | Path | None = None) -> Path:
    """:func:`check_output_path` for an ``.lrac`` bitstream: any extension but an audio file's
    (a bitstream named ``out.wav`` is no audio file; ``lrac-decode`` writes the audio)."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        raise AudioError(f"{path}: an .lrac bitstream cannot be written as '{suffix}' (name it .lrac; "
                         "lrac-decode turns it into audio)")
    return check_output_path(path, suffixes=None, source=source)


class AudioWriter:
    """Mono 16-bit PCM written block by block (samples clipped to [-1, 1]) to a temporary file
    beside ``path``, renamed to ``path`` by :meth:`close`; leaving a ``with`` block by an exception
    removes it and leaves ``path`` as it was. Creates parent folders."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = check_output_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        fmt = {".wav": "WAV", ".flac": "FLAC"}[self.path.suffix.lower()]
        self.file = sf.SoundFile(str(self.tmp), "w", int(sample_rate), 1, "PCM_16", format=fmt)
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        block = np.clip(np.asarray(block, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self.file.write(block)
        self.frames += len(block)

    def close(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.file.closed or exc_type is not None:
            self.abort()


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono ``[T]`` audio (clipped to [-1, 1] for integer formats); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    sf.write(str(path), audio, int(sample_rate), subtype=subtype)


def active_power(audio: np.ndarray, sample_rate: int, frame_ms: float = 20.0, floor_db: float = -50.0
                 ) -> float:
    """Mean power of the non-silent frames of ``[T]`` audio.

    Frames more than ``floor_db`` below the loudest frame count as silence. Returns 0 for silence."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    frame = max(1, int(sample_rate * frame_ms / 1000))
    n = len(audio) // frame
    if n == 0:
        return float(np.mean(audio ** 2)) if len(audio) else 0.0
    powers = np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)
    peak = float(powers.max())
    if peak <= 0:
        return 0.0
    active = powers[powers >= peak * 10 ** (floor_db / 10)]
    return float(active.mean())


def db(value: float) -> float:
    """10 log10 of a power, -inf for 0."""
    return 10 * math.log10(value) if value > 0 else -math.inf


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".opus"}

"""Batch scoring: pair reference and decoded audio, compensate delay, score, summarise, report.

Reference and decoded audio come from folders (utterance id = file stem) or Kaldi-style ``.scp``
files (``<uttid> <path>`` lines). Every problem with one utterance (no counterpart, unreadable
file, silence) is recorded in its row and the run goes on. Reports: ``per_utterance.csv``,
``summary.json`` (metric -> mean, ci95, n) and ``summary.md``.

Stages 6-7 of the recipe (:func:`code_and_score`) encode and decode a test set with a
:class:`lrac.Codec` at each bitrate, keep the ``.lrac`` files, write ``wav/<utt>.wav`` and
``wav/wav.scp``, and score them.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..audio import AudioError, load_audio, resample
from ..config import bitrate_from_kbps
from ..lists import list_audio, write_scp
from ..mel import mel_filterbank
from .metrics import column_spec, compute_metrics, resolve_metrics

# Waveform correlation below this means synthetic phase (vocoders): align on band envelopes instead.
MIN_WAVEFORM_CORRELATION = 0.3
# A waveform lag this well correlated is taken as it is (Opus, Lyra and Speex WB q1 on 40 test clips:
# 0.80-0.87 for the median clip, 0.42-0.51 for the weakest); a weaker one only within this distance
# of the band-envelope lag (estimate_delay).
STRONG_WAVEFORM_CORRELATION = 0.6
ENVELOPE_AGREEMENT_MS = 3.0
# Length differences up to this (beyond the compensated delay) are frame padding, not worth a note.
LENGTH_TOLERANCE_MS = 20.0

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Pair:
    """One utterance to score: its id, reference file and decoded file."""

    utt: str
    ref: Path
    deg: Path


@dataclass
class Skipped:
    """An utterance that was not scored, with a one-line reason."""

    utt: str
    reason: str
    ref: str = ""
    deg: str = ""

    def row(self) -> dict[str, Any]:
        return {"utt": self.utt, "status": "skipped", "reason": self.reason, "ref": self.ref,
                "deg": self.deg}


@dataclass
class ScoreResult:
    """Rows of every utterance (scored and skipped) and the summary of the scored ones."""

    rows: list[dict[str, Any]]
    columns: list[str]
    summary: dict[str, dict[str, float | int | None]] = field(default_factory=dict)

    @property
    def scored(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------


def load_list(source: str | Path | dict[str, Path]) -> dict[str, Path]:
    """Utterance id -> audio path from a folder, a Kaldi-style ``.scp`` list, a file or a dict.

    In a folder the id is the file stem, or the path relative to the folder when two files share
    a stem. Raises ValueError (AudioError) when the source is missing, empty, or repeats an id.
    """
    if isinstance(source, dict):
        return {str(k): Path(v) for k, v in source.items()}
    entries = list_audio(source)
    if not entries:
        raise AudioError(f"{source}: no audio files in it")
    if Path(source).is_dir():
        stems = [Path(name).name for name, _ in entries]
        if len(set(stems)) == len(stems):  # ids by stem, so nested and flat layouts pair up
            entries = [(stem, path) for stem, (_, path) in zip(stems, entries)]
    items: dict[str, Path] = {}
    for utt, path in entries:
        if utt in items:
            raise ValueError(f"{source}: utterance id {utt!r} appears twice")
        items[utt] = Path(path)
    return items


def _single_file(source: str | Path | dict[str, Path]) -> bool:
    return not isinstance(source, dict) and Path(source).is_file() and Path(source).suffix != ".scp" \
        and not Path(source).name.endswith("wav.scp")


def pair_utterances(ref: str | Path | dict[str, Path], deg: str | Path | dict[str, Path]
                    ) -> tuple[list[Pair], list[Skipped]]:
    """Match reference and decoded audio by utterance id.

    Two single audio files (``ref.flac``, ``deg.wav``) are one pair, whatever their names, under
    the reference's id.

    Returns:
        ``(pairs, skipped)``: pairs sorted by id; ids present on one side only are skipped with
        the reason.
    """
    refs, degs = load_list(ref), load_list(deg)
    if _single_file(ref) and _single_file(deg):
        (utt, ref_path), = refs.items()
        return [Pair(utt, ref_path, next(iter(degs.values())))], []
    pairs = [Pair(u, refs[u], degs[u]) for u in sorted(refs) if u in degs]
    skipped = [Skipped(u, "no decoded counterpart", ref=str(refs[u])) for u in sorted(refs)
               if u not in degs]
    skipped += [Skipped(u, "no reference counterpart", deg=str(degs[u])) for u in sorted(degs)
                if u not in refs]
    return pairs, skipped


# --------------------------------------------------------------------------------------------
# Delay compensation
# --------------------------------------------------------------------------------------------


def _xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """``c[k] = sum_n a[n] b[n + k]`` for lags ``k`` in ``[-max_lag, max_lag]`` (FFT)."""
    size = 1 << (len(a) + len(b)).bit_length()
    spectrum = np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size)
    corr = np.fft.irfft(spectrum, size)
    lags = np.arange(-max_lag, max_lag + 1)
    return lags, corr[lags % size]


def _band_envelopes(audio: np.ndarray, rate: int, hop: int) -> np.ndarray:
    """``[frames, 16]`` mean-removed log energies of 16 mel bands in 100-4000 Hz, one per ``hop``."""
    n_fft = 1 << max(8, int(math.ceil(math.log2(rate * 0.02))))  # >= 20 ms window
    fb = mel_filterbank(rate, n_fft, 16, 100.0, min(4000.0, rate / 2), scale="htk")
    x = np.pad(audio.astype(np.float64), (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2
    env = np.log(power @ fb.T + 1e-10)
    return env - env.mean(axis=0)


def _envelope_lag(ref: np.ndarray, deg: np.ndarray, rate: int, max_lag: int) -> int:
    """The lag (samples) that best correlates 16 band envelopes of ``ref`` and ``deg`` (1 ms hop)."""
    hop = max(1, rate // 1000)
    env_r, env_d = _band_envelopes(ref, rate, hop), _band_envelopes(deg, rate, hop)
    max_frames = max(0, min(max_lag // hop, len(env_r) - 1, len(env_d) - 1))
    total = sum(_xcorr(env_r[:, b], env_d[:, b], max_frames)[1] for b in range(env_r.shape[1]))
    return int((np.argmax(total) - max_frames) * hop)


def estimate_delay(ref: np.ndarray, deg: np.ndarray, rate: int, max_delay_ms: float = 100.0
                   ) -> tuple[int, float]:
    """Constant delay of ``deg`` behind ``ref`` in samples (negative: ``deg`` is early).

    Two estimates within ``max_delay_ms``: the waveform cross-correlation peak (exact to the sample
    for waveform codecs) and the lag that best correlates 16 band envelopes at a 1 ms hop (within
    about 2.5 ms for every codec measured). The waveform lag is taken when its normalised
    correlation is clear (>= 0.3) and either agrees with the envelopes (within
    :data:`ENVELOPE_AGREEMENT_MS`) or is strong (>= :data:`STRONG_WAVEFORM_CORRELATION`); otherwise
    the envelope lag. The agreement test matters for codecs that synthesise phase (vocoders, lrac):
    on voiced speech their waveform correlation can peak at a multiple of the pitch period instead
    (0.31-0.43 at 3-24 ms off on 10 of 40 test clips of lrac, whose delay is 0 by design).

    Args:
        ref, deg: ``[T]`` arrays at ``rate`` Hz (any lengths).
    Returns:
        ``(lag_samples, waveform_correlation)``.
    """
    max_lag = max(0, min(int(rate * max_delay_ms / 1000), len(ref) - 1, len(deg) - 1))
    r, d = ref.astype(np.float64), deg.astype(np.float64)
    lags, corr = _xcorr(r, d, max_lag)
    norm = math.sqrt(float(np.dot(r, r)) * float(np.dot(d, d)))
    if norm == 0.0:  # an all-zero signal has no delay to find
        return 0, 0.0
    best = int(np.argmax(corr))
    lag, peak = int(lags[best]), float(corr[best] / norm)
    if peak >= STRONG_WAVEFORM_CORRELATION:
        return lag, peak
    envelope_lag = _envelope_lag(ref, deg, rate, max_lag)
    if peak >= MIN_WAVEFORM_CORRELATION and abs(lag - envelope_lag) <= rate * ENVELOPE_AGREEMENT_MS / 1000:
        return lag, peak
    return envelope_lag, peak


def align(ref: np.ndarray, deg: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove a delay of ``lag`` samples (see :func:`estimate_delay`) and crop both ``[T]`` arrays
    to their common length (nothing is zero-padded, so no artificial silence is scored)."""
    if lag > 0:
        deg = deg[lag:]
    elif lag < 0:
        ref = ref[-lag:]
    n = min(len(ref), len(deg))
    return ref[:n], deg[:n]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def metric_columns(metric_names: list[str] | None = None) -> list[str]:
    """CSV columns produced by these metrics (default: the default metric set)."""
    return [c for spec in resolve_metrics(metric_names) for c in spec.columns]


def score_pair(pair: Pair, metric_names: list[str] | None = None, max_delay_ms: float = 100.0
               ) -> dict[str, Any]:
    """Load, align and score one utterance. Never raises for bad audio: the row says what failed.

    The decoded audio is resampled to the reference's rate; a constant delay is found and removed
    (reported as ``delay_ms``); both are cropped to their common length.

    Returns:
        A row: ``utt, status ('ok'|'skipped'), reason, duration_s, rate_hz, delay_ms,
        <metric columns>, notes, ref, deg``.
    """
    row: dict[str, Any] = {"utt": pair.utt, "status": "ok", "reason": "", "ref": str(pair.ref),
                           "deg": str(pair.deg)}
    try:
        ref, rate = load_audio(pair.ref, warn_stereo=False)
    except AudioError as exc:
        return {**row, "status": "skipped", "reason": f"bad reference: {exc}"}
    try:
        deg, deg_rate = load_audio(pair.deg, warn_stereo=False)
    except AudioError as exc:
        return {**row, "status": "skipped", "reason": f"bad decoded audio: {exc}"}
    try:
        return _score_loaded(row, ref, rate, deg, deg_rate, metric_names, max_delay_ms)
    except Exception as exc:  # an unexpected failure loses this row only, never the run
        return {**row, "status": "skipped", "reason": f"scoring failed: {type(exc).__name__}: {exc}"}


def _score_loaded(row: dict[str, Any], ref: np.ndarray, rate: int, deg: np.ndarray, deg_rate: int,
                  metric_names: list[str] | None, max_delay_ms: float) -> dict[str, Any]:
    notes = []
    if deg_rate != rate:
        notes.append(f"decoded at {deg_rate} Hz, resampled to the reference's {rate} Hz")
        deg = resample(deg, deg_rate, rate)
    lag, _ = estimate_delay(ref, deg, rate, max_delay_ms)
    extra = len(deg) - lag - len(ref)
    if abs(extra) > rate * LENGTH_TOLERANCE_MS / 1000:
        notes.append(f"decoded is {abs(extra) / rate:.2f} s {'longer' if extra > 0 else 'shorter'}"
                     " than the reference; scored the common part")
    ref, deg = align(ref, deg, lag)
    if len(ref) == 0:
        return {**row, "status": "skipped", "reason": "no overlap with the reference after delay compensation"}
    values, reasons = compute_metrics(ref, deg, rate, resolve_metrics(metric_names))
    # One note per distinct reason, naming the metrics it hit.
    by_reason: dict[str, list[str]] = {}
    for col, reason in reasons.items():
        by_reason.setdefault(reason, []).append(col)
    notes += [f"{', '.join(cols)}: {reason}" for reason, cols in by_reason.items()]
    row.update(duration_s=len(ref) / rate, rate_hz=rate, delay_ms=1000.0 * lag / rate, **values,
               notes="; ".join(notes))
    return row


def _init_worker() -> None:
    # Parallelism comes from processes; keep each one single-threaded.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def score_pairs(pairs: list[Pair], metric_names: list[str] | None = None, max_delay_ms: float = 100.0,
                jobs: int = 1, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Score every pair, in ``jobs`` processes when ``jobs > 1``; rows come back in input order."""
    resolve_metrics(metric_names)  # fail fast on an unknown metric name
    rows: list[dict[str, Any] | None] = [None] * len(pairs)
    if jobs <= 1 or len(pairs) <= 1:
        for i, pair in enumerate(pairs):
            rows[i] = score_pair(pair, metric_names, max_delay_ms)
            if progress:
                progress(i + 1, len(pairs))
        return rows  # type: ignore[return-value]
    # spawn, not fork: the parent may hold torch/OpenMP threads that a forked child would inherit.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(pairs)), mp_context=context,
                             initializer=_init_worker) as pool:
        futures = {pool.submit(score_pair, p, metric_names, max_delay_ms): i
                   for i, p in enumerate(pairs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            try:
                rows[i] = future.result()
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                pair = pairs[i]
                rows[i] = Skipped(pair.utt, f"worker failed: {type(exc).__name__}: {exc}",
                                  str(pair.ref), str(pair.deg)).row()
            if progress:
                progress(done, len(pairs))
    return rows  # type: ignore[return-value]


def mean_ci95(values: list[float]) -> dict[str, float | int | None]:
    """Mean and half-width of its 95% confidence interval (Student t) over the finite values.

    Returns ``{"mean", "ci95", "n", "nan"}``; ``ci95`` is None below two values, ``mean`` None
    with none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(finite)
    out: dict[str, float | int | None] = {"mean": None, "ci95": None, "n": n,
                                          "nan": len(values) - n}
    if n:
        out["mean"] = statistics.fmean(finite)
    if n >= 2:
        from scipy.stats import t

        out["ci95"] = float(t.ppf(0.975, n - 1) * statistics.stdev(finite) / math.sqrt(n))
    return out


def summarize(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, dict[str, Any]]:
    """``{column: mean_ci95(...)}`` over the scored rows, for each metric column and ``delay_ms``."""
    scored = [r for r in rows if r.get("status") == "ok"]
    return {col: mean_ci95([r.get(col, math.nan) for r in scored]) for col in [*columns, "delay_ms"]}


def score(ref: str | Path | dict[str, Path], deg: str | Path | dict[str, Path],
          metric_names: list[str] | None = None, max_delay_ms: float = 100.0, jobs: int = 1,
          progress: Progress | None = None) -> ScoreResult:
    """Pair ``ref`` with ``deg`` (folders, scp files or dicts) and score every pair.

    Raises ValueError when a source is missing or empty, or a metric name is unknown.
    """
    columns = metric_columns(metric_names)
    pairs, skipped = pair_utterances(ref, deg)
    rows = score_pairs(pairs, metric_names, max_delay_ms, jobs, progress)
    rows += [s.row() for s in skipped]
    return ScoreResult(rows, columns, summarize(rows, columns))


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _unit(column: str) -> tuple[str, str]:
    """(unit, 'higher'|'lower') for a summary column."""
    if column == "delay_ms":
        return "ms", ""
    spec = column_spec(column)
    return spec.unit, "higher" if spec.higher_is_better else "lower"


def _fmt(value: float | None, ci: float | None = None) -> str:
    if value is None:
        return "–"
    digits = 3 if abs(value) < 10 else 2
    return f"{value:.{digits}f}" + ("" if ci is None else f" ± {ci:.{digits}f}")


def summary_markdown(result: ScoreResult, title: str, extra: dict[str, Any] | None = None) -> str:
    """The Markdown report: metric table (mean ± 95% CI), delays, skipped and undefined values."""
    scored, skipped = result.scored, result.skipped
    lines = [f"# {title}", "",
             f"{len(scored)} utterance(s) scored, {len(skipped)} skipped, "
             f"{sum(r.get('duration_s', 0.0) for r in scored):.1f} s of audio.", ""]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    if extra:
        lines.append("")
    lines += ["| metric | mean ± 95% CI | n | unit | better |", "|---|---|---|---|---|"]
    for col, stats in result.summary.items():
        unit, better = _unit(col)
        n = f"{stats['n']}" + (f" ({stats['nan']} NaN)" if stats["nan"] else "")
        lines.append(f"| {col} | {_fmt(stats['mean'], stats['ci95'])} | {n} | {unit} | {better} |")
    delays = sorted({round(r["delay_ms"], 3) for r in scored})
    if delays:
        what = (f"a constant {delays[0]:g} ms" if len(delays) == 1
                else f"{delays[0]:g} to {delays[-1]:g} ms (per utterance)")
        lines += ["", f"Delay of the decoded audio, found and compensated: {what}."]
    if skipped:
        lines += ["", "## Skipped", "", "| utterance | reason |", "|---|---|"]
        lines += [f"| {r['utt']} | {r['reason']} |" for r in skipped]
    noted = [r for r in scored if r.get("notes")]
    if noted:
        lines += ["", "## Notes (undefined metrics are NaN and left out of the means)", "",
                  "| utterance | note |", "|---|---|"]
        lines += [f"| {r['utt']} | {r['notes']} |" for r in noted]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, result: ScoreResult, title: str = "lrac-score",
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``per_utterance.csv``, ``summary.json`` and ``summary.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("per_utterance.csv", "summary.json", "summary.md")}
    fields = ["utt", "status", "reason", "duration_s", "rate_hz", "delay_ms", *result.columns,
              "notes", "ref", "deg"]
    with open(paths["per_utterance.csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: _cell(row.get(k)) for k in fields})
    paths["summary.json"].write_text(json.dumps(json_safe(result.summary), indent=2) + "\n")
    paths["summary.md"].write_text(summary_markdown(result, title, extra))
    return paths


# --------------------------------------------------------------------------------------------
# Stages 6-7: code a test set with an lrac model at each bitrate, then score
# --------------------------------------------------------------------------------------------


def testset_name(testset: str | Path) -> str:
    """The name used in output paths: the folder's name, or an scp's folder name."""
    path = Path(testset)
    return (path.parent if path.is_file() else path).resolve().name


def code_testset(codec: Any, refs: dict[str, Path], out_dir: str | Path, bitrate_bps: int,
                 progress: Progress | None = None) -> tuple[dict[str, Path], list[Skipped], dict]:
    """Stage 6 for one bitrate: ``out_dir/lrac/<utt>.lrac`` and ``out_dir/wav/<utt>.wav`` (+ wav.scp).

    Returns:
        ``(decoded, skipped, stats)``; stats has ``seconds`` (audio), ``lrac_bytes``,
        ``bitrate_bps_real`` (file sizes x 8 / seconds), ``encode_rtf`` and ``decode_rtf``.
    """
    from ..compress import decode_file, encode_file  # codec layer, needed in this mode only

    out_dir = Path(out_dir)
    decoded: dict[str, Path] = {}
    skipped: list[Skipped] = []
    seconds = enc_s = dec_s = 0.0
    n_bytes = 0
    for i, (utt, ref) in enumerate(sorted(refs.items())):
        lrac_path, wav_path = out_dir / "lrac" / f"{utt}.lrac", out_dir / "wav" / f"{utt}.wav"
        try:
            t0 = time.perf_counter()
            info = encode_file(codec, ref, lrac_path, bitrate_bps)
            t1 = time.perf_counter()
            decode_file(codec, lrac_path, wav_path)
            t2 = time.perf_counter()
        except (AudioError, ValueError, OSError) as exc:
            skipped.append(Skipped(utt, f"not coded: {str(exc).splitlines()[0]}", ref=str(ref)))
        else:
            seconds += info["seconds"]
            n_bytes += lrac_path.stat().st_size
            enc_s, dec_s = enc_s + (t1 - t0), dec_s + (t2 - t1)
            decoded[utt] = wav_path
        if progress:
            progress(i + 1, len(refs))
    write_scp(out_dir / "wav" / "wav.scp", {u: p.resolve() for u, p in decoded.items()})
    per_s = (lambda v: v / seconds) if seconds else (lambda v: math.nan)
    stats = {"seconds": seconds, "lrac_bytes": n_bytes, "bitrate_bps_real": per_s(8.0 * n_bytes),
             "encode_rtf": per_s(enc_s), "decode_rtf": per_s(dec_s)}
    return decoded, skipped, stats


def code_and_score(codec: Any, testset: str | Path, out_dir: str | Path, bitrates_kbps: list[float],
                   metric_names: list[str] | None = None, max_delay_ms: float = 100.0, jobs: int = 1,
                   progress: Callable[[str, int, int], None] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Stages 6 and 7: for each bitrate, code every utterance of ``testset`` and score it.

    Layout (as the recipe's)::

        out_dir/<B>kbps/<testset>/lrac/<utt>.lrac
        out_dir/<B>kbps/<testset>/wav/<utt>.wav, wav/wav.scp
        out_dir/<B>kbps/<testset>/score/{per_utterance.csv, summary.json, summary.md}
        out_dir/summary.{json,md}   all bitrates side by side

    Returns:
        ``{"<B>kbps": {"bitrate_bps_real", "encode_rtf", "decode_rtf", ..., "result": ScoreResult}}``.
    """
    refs = load_list(testset)
    name = testset_name(testset)
    out_dir = Path(out_dir)
    metric_columns(metric_names)  # refuse bad metric names and bitrates before coding anything
    modes_bps = [bitrate_from_kbps(kbps, codec.bitrates_bps) for kbps in bitrates_kbps]
    runs: dict[str, dict[str, Any]] = {}
    for kbps, bps in zip(bitrates_kbps, modes_bps):
        label = f"{kbps:g}kbps"
        base = out_dir / label / name
        tick = (lambda stage: (lambda d, t: progress(f"{label} {stage}", d, t))) if progress else None
        decoded, not_coded, stats = code_testset(codec, refs, base, bps, tick("coding") if tick else None)
        result = score(refs, decoded, metric_names, max_delay_ms, jobs, tick("scoring") if tick else None)
        # Utterances that failed to code are listed once, with the coding error, not as "no counterpart".
        failed = {s.utt for s in not_coded}
        result.rows = [r for r in result.rows if r["utt"] not in failed] + [s.row() for s in not_coded]
        extra = {"model bitrate": f"{kbps:g} kbps",
                 "real bitrate (.lrac sizes)": f"{stats['bitrate_bps_real'] / 1000:.3f} kbps",
                 "real-time factor": f"encode {stats['encode_rtf']:.4f}, decode {stats['decode_rtf']:.4f}"}
        write_report(base / "score", result, f"lrac {label} on {name}", extra)
        runs[label] = {"bitrate_bps": bps, **stats, "result": result}
    write_bitrate_summary(out_dir, runs, name)
    return runs


def write_bitrate_summary(out_dir: str | Path, runs: dict[str, dict[str, Any]], testset: str
                          ) -> dict[str, Path]:
    """``summary.json`` / ``summary.md`` with one entry (row) per bitrate of :func:`code_and_score`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {label: {**{k: v for k, v in run.items() if k != "result"},
                    "scored": len(run["result"].scored), "skipped": len(run["result"].skipped),
                    "metrics": run["result"].summary}
            for label, run in runs.items()}
    json_path, md_path = out_dir / "summary.json", out_dir / "summary.md"
    json_path.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    columns = next(iter(runs.values()))["result"].columns if runs else []
    head = ["bitrate", "real kbps", "enc RTF", "dec RTF", "n", *columns]
    lines = [f"# lrac on {testset}", "", "Means ± 95% CI over utterances; real kbps from the "
             ".lrac file sizes (header included).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, run in runs.items():
        summary = run["result"].summary
        cells = [label, f"{run['bitrate_bps_real'] / 1000:.3f}", f"{run['encode_rtf']:.4f}",
                 f"{run['decode_rtf']:.4f}", str(len(run["result"].scored))]
        cells += [_fmt(summary[c]["mean"], summary[c]["ci95"]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return {"summary.json": json_path, "summary.md": md_path}

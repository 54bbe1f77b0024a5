"""Data sources, recipe stages 1-3 and the resumable chunk stream."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lrac.train.data import (ChunkStream, Prefetcher, Utterance, check_entries, chunk_starts,
                             find_toolkit_layout, fixed_chunks, format_entries, length_filter,
                             load_prepared, load_source, make_prefetcher, read_list, scan_folder)

torch.set_num_threads(1)
SR = 24000
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LRAC_DATA", REPO.parent / "shared" / "data"))


def _tone(seconds: float, rate: int = SR, amp: float = 0.3, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def corpus(tmp_path):
    """A small corpus: files at several rates and formats, one silent, one broken, one short."""
    root = tmp_path / "corpus"
    (root / "a").mkdir(parents=True)
    (root / "b" / "deep").mkdir(parents=True)
    sf.write(root / "a" / "one.wav", _tone(3.5), SR)
    sf.write(root / "a" / "two.flac", _tone(4.0, 16000), 16000)
    sf.write(root / "b" / "deep" / "three.flac", _tone(6.0, 48000, freq=330), 48000)
    sf.write(root / "b" / "silent.wav", np.zeros(SR * 4, np.float32), SR)
    sf.write(root / "b" / "short.wav", _tone(1.0), SR)
    (root / "b" / "broken.wav").write_bytes(b"RIFF....garbage")
    (root / "b" / "notes.txt").write_text("not audio")
    return root


def test_folder_scp_and_list_sources(corpus, tmp_path):
    utts = scan_folder(corpus)
    assert [u.uid for u in utts] == ["a_one", "a_two", "b_broken", "b_deep_three", "b_short", "b_silent"]
    # Kaldi list relative to the recipe root (the list's parent folder), plus a pipe command
    recipe = tmp_path / "recipe"
    (recipe / "data" / "speech").mkdir(parents=True)
    os.symlink(corpus, recipe / "audio")
    (recipe / "data" / "speech" / "wav.scp").write_text(
        "u1 audio/a/one.wav\nu2 audio/a/two.flac\n\nu3 sox x.wav -t wav - |\n")
    (recipe / "data" / "noise.scp").write_text("n1 audio/b/deep/three.flac\n")
    entries = read_list(recipe / "data" / "speech" / "wav.scp")
    assert [u.uid for u in entries] == ["u1", "u2", "u3"]
    assert Path(entries[0].path).is_file() and entries[2].path.endswith("|")
    layout = find_toolkit_layout(recipe)  # the parent of data/ works too
    assert layout is not None and layout.noise is not None and layout.valid is None
    assert [u.uid for u in load_source(recipe / "data")] == ["u1", "u2", "u3"]
    # a plain list of paths (like shared/data/splits/*.txt: relative to the list's parent)
    (recipe / "lists").mkdir()
    (recipe / "lists" / "train.txt").write_text("audio/a/one.wav\n# comment\naudio/b/deep/three.flac\n")
    assert [u.uid for u in load_source(recipe / "lists" / "train.txt")] == ["audio_a_one",
                                                                           "audio_b_deep_three"]
    with pytest.raises(FileNotFoundError, match="data source not found"):
        load_source(tmp_path / "nope")


def test_stages_count_and_skip_bad_entries(corpus, tmp_path):
    utts = scan_folder(corpus) + [Utterance("gone", str(corpus / "gone.wav")),
                                  Utterance("pipe", "sox a.wav -t wav - |")]
    checked, report = check_entries(utts, SR)
    assert report.kept == 5 and report.skipped == {"unreadable files": 1, "missing files": 1,
                                                   "pipe commands (not supported; format the list first)": 1}
    assert "broken.wav" in report.summary()
    lengths = {u.uid: u.num_samples for u in checked}
    assert lengths["a_two"] == 4 * SR and lengths["b_deep_three"] == 6 * SR  # at 24 kHz

    out = tmp_path / "dump" / "org" / "train"
    formatted, report = format_entries(checked, out, SR)
    assert report.skipped == {"silent files": 1}
    assert {u.uid for u in formatted} == {"a_one", "a_two", "b_deep_three", "b_short"}
    for u in formatted:
        info = sf.info(u.path)
        assert info.samplerate == SR and info.channels == 1 and info.frames == u.num_samples
    assert load_prepared(out) == formatted
    # cached: a second run converts nothing (files untouched)
    mtimes = {u.path: os.stat(u.path).st_mtime_ns for u in formatted}
    again, _ = format_entries(checked, out, SR)
    assert again == formatted and all(os.stat(p).st_mtime_ns == m for p, m in mtimes.items())

    kept, report = length_filter(formatted, SR, 2.9, 5.0)
    assert {u.uid for u in kept} == {"a_one", "a_two"}
    assert report.skipped == {"shorter than 2.9 s": 1, "longer than 5 s": 1}
    # strict bounds, as the recipe: exactly 4.0 s is dropped by max 4.0
    kept, _ = length_filter(formatted, SR, 2.9, 4.0)
    assert {u.uid for u in kept} == {"a_one"}


def test_chunk_starts_overlap_half_and_stay_inside():
    rng = np.random.default_rng(0)
    for length in (62400, 62401, 100000, 240000):
        starts = chunk_starts(length, 62400, rng)
        assert starts[0] >= 0 and starts[-1] + 62400 <= length
        assert all(b - a == 31200 for a, b in zip(starts, starts[1:]))
        assert len(starts) == (length - 62400) // 31200 + 1
    assert chunk_starts(1000, 62400, rng) == [0]


def _stream_utts(tmp_path, n=6):
    utts = []
    for i in range(n):
        p = tmp_path / f"u{i}.wav"
        noise = np.random.default_rng(i).standard_normal(int((1.0 + 0.3 * i) * SR)) * 0.1
        sf.write(p, noise.astype(np.float32), SR, subtype="FLOAT")
        utts.append(Utterance(f"u{i}", str(p), None))
    return utts


def _take(stream, n):
    return [stream.next_chunk() for _ in range(n)]


def test_stream_is_deterministic_and_resumes_exactly(tmp_path):
    utts = _stream_utts(tmp_path)
    make = lambda: ChunkStream(utts, 4800, buffer_size=5, seed=3)  # noqa: E731
    ref = _take(make(), 40)  # several epochs
    stream = make()
    first = _take(stream, 17)
    state = stream.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = _take(resumed, 23)
    for (a_in, a_tgt), (b_in, b_tgt) in zip(ref, first + rest):
        np.testing.assert_array_equal(a_in, b_in)
        np.testing.assert_array_equal(a_tgt, b_tgt)
    assert len({c[0].tobytes() for c in ref}) > 10  # really different chunks
    other = _take(ChunkStream(utts, 4800, buffer_size=5, seed=4), 40)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(ref, other))


def test_augment_cache_changes_the_speed_only(tmp_path):
    utts = _stream_utts(tmp_path)
    calls = []

    def noisy(speech, rng):  # an augmentation drawn from the utterance's generator, as Track 2's
        calls.append(1)
        return speech + 0.01 * rng.standard_normal(len(speech)).astype(np.float32), speech

    def run(cache_mb):
        calls.clear()
        stream = ChunkStream(utts, 4800, noisy, buffer_size=50, seed=2, cache_mb=cache_mb)
        chunks = _take(stream, 60)
        assert stream._cache_bytes <= max(stream._cache_budget, max(
            a.nbytes + b.nbytes for a, b in stream._cache.values()))
        return chunks, len(calls)

    small, small_calls = run(0.0)      # only the newest utterance kept
    large, large_calls = run(64.0)     # every utterance of an epoch kept
    for (a_in, a_tgt), (b_in, b_tgt) in zip(small, large):
        np.testing.assert_array_equal(a_in, b_in)
        np.testing.assert_array_equal(a_tgt, b_tgt)
    assert large_calls <= 3 * len(utts)  # once per utterance and epoch (60 chunks: under 3 epochs)
    assert small_calls > 2 * large_calls


def test_prefetcher_state_is_the_consumed_position(tmp_path):
    utts = _stream_utts(tmp_path)
    ref = ChunkStream(utts, 4800, buffer_size=4, seed=1)
    expected = [ref.next_batch(3) for _ in range(6)]
    pre = Prefetcher(ChunkStream(utts, 4800, buffer_size=4, seed=1), 3)
    got = [pre.next() for _ in range(3)]
    state = pre.state_dict()
    pre.close()
    resumed = ChunkStream(utts, 4800, buffer_size=4, seed=1)
    resumed.load_state_dict(state)
    got += [resumed.next_batch(3) for _ in range(3)]
    for (a, b), (c, d) in zip(expected, got):
        assert a.shape == (3, 1, 4800)
        assert torch.equal(a, c) and torch.equal(b, d)


def test_data_workers_take_turns_and_resume_exactly(tmp_path):
    utts = _stream_utts(tmp_path)
    make = lambda: ChunkStream(utts, 4800, buffer_size=4, seed=1)  # noqa: E731
    # what two workers must produce: shard k's batches, taken in turn
    shards = [make().shard(k, 2) for k in range(2)]
    expected = [shards[i % 2].next_batch(3) for i in range(7)]
    pool = make_prefetcher(make(), 3, workers=2)
    got = [pool.next() for _ in range(3)]
    state = pool.state_dict()
    pool.close()
    resumed = make_prefetcher(make(), 3, workers=2, state=state)
    got += [resumed.next() for _ in range(4)]
    resumed.close()
    for (a, b), (c, d) in zip(expected, got):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert not torch.equal(got[0][0], got[1][0])
    # the shards split the utterances between them
    orders = [set(int(i) for i in shard._epoch_order(0)) for shard in shards]
    assert orders[0].isdisjoint(orders[1]) and orders[0] | orders[1] == set(range(6))
    with pytest.raises(ValueError, match=r"2 data worker\(s\) \(--workers\); this run has 0"):
        make_prefetcher(make(), 3, workers=0, state=state)
    with pytest.raises(ValueError, match=r"0 data worker\(s\) \(--workers\); this run has 2"):
        make_prefetcher(make(), 3, workers=2, state=make().state_dict())


def test_data_worker_error_reaches_the_trainer(tmp_path):
    utts = _stream_utts(tmp_path, 2)

    def broken_pairs(speech, rng):
        raise OSError("noise file vanished")

    pool = make_prefetcher(ChunkStream(utts, 4800, broken_pairs, buffer_size=4), 2, workers=2)
    with pytest.raises(RuntimeError, match="data worker 0: OSError: noise file vanished"):
        pool.next()
    pool.close()
    # a worker killed from outside is reported, not waited for
    pool = make_prefetcher(ChunkStream(utts, 4800, buffer_size=4), 2, workers=2)
    pool.next()
    os.kill(pool._procs[1].pid, signal.SIGKILL)
    pool._procs[1].join()
    with pytest.raises(RuntimeError, match=r"data worker 1 stopped \(exit code -9\)"):
        for _ in range(4):   # (batches it had already queued come first)
            pool.next()
    pool.close()


def test_ranks_share_out_utterances(tmp_path):
    utts = _stream_utts(tmp_path, 6)
    seen = []
    for rank in (0, 1):
        s = ChunkStream(utts, 4800, buffer_size=100, seed=0, rank=rank, world=2)
        seen.append(set(int(i) for i in s._epoch_order(0)))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(6))
    with pytest.raises(ValueError, match="same data and process count"):
        ChunkStream(utts, 4800, world=2).load_state_dict(ChunkStream(utts, 4800).state_dict())


def test_unreadable_utterance_is_skipped_not_fatal(tmp_path):
    utts = _stream_utts(tmp_path, 3)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"garbage")
    utts.append(Utterance("broken", str(broken), 48000))  # length known, content unreadable
    stream = ChunkStream(utts, 4800, buffer_size=3, seed=0)
    with pytest.warns(UserWarning, match="skipping .*broken.wav"):
        chunks = _take(stream, 60)
    assert len(chunks) == 60 and stream.skipped["broken"] >= 1
    dead = ChunkStream([Utterance("x", str(broken), 48000)], 4800, buffer_size=2)
    with pytest.raises(RuntimeError, match="no usable audio"):
        with pytest.warns(UserWarning):
            dead.next_chunk()


def test_pairs_and_fixed_validation_chunks(tmp_path):
    utts = _stream_utts(tmp_path, 3)
    pairs = lambda s, rng: (s + 0.01, s)  # noqa: E731
    inp, tgt = fixed_chunks(utts, 4800, pairs, max_chunks=7, seed=0)
    assert inp.shape == tgt.shape == (7, 1, 4800)
    assert torch.allclose(inp, tgt + 0.01)
    again, _ = fixed_chunks(utts, 4800, pairs, max_chunks=7, seed=0)
    assert torch.equal(inp, again)
    stream = ChunkStream(utts, 4800, pairs=pairs, buffer_size=2)
    a, b = stream.next_chunk()
    np.testing.assert_allclose(a, b + 0.01, atol=1e-7)


@pytest.mark.skipif(not (SHARED / "splits" / "valid.speech.txt").is_file(),
                    reason=f"shared data not found at {SHARED} (set LRAC_DATA)")
def test_real_data_list_passes_stage_1():
    utts = load_source(SHARED / "splits" / "valid.speech.txt")
    checked, report = check_entries(utts, SR, "valid")
    assert report.total == len(utts) > 50 and report.kept == report.total, report.summary()
    assert all(u.num_samples and u.num_samples > SR // 2 for u in checked)


def test_a_source_used_as_it_is_gives_the_samples_of_its_prepared_copy(corpus, tmp_path):
    """16 and 48 kHz files resampled at load equal their 16-bit copies of stage 2 bit for bit: a
    run validates (and trains) on the same audio whether or not its prepared list is found."""
    from lrac.train.data import run_stages

    formatted = run_stages("valid", corpus, tmp_path / "dump", 1, 2, SR, report=lambda line: None)
    kept = {u.uid for u in formatted}
    raw = [u for u in load_source(corpus) if u.uid in kept]
    assert {"a_two", "b_deep_three"} <= kept and [u.uid for u in raw] == [u.uid for u in formatted]
    for a, b in zip(fixed_chunks(raw, 4800, max_chunks=40), fixed_chunks(formatted, 4800, max_chunks=40)):
        assert torch.equal(a, b)
    streams = [ChunkStream(utts, 4800, buffer_size=3, seed=1) for utts in (raw, formatted)]
    for _ in range(10):
        for a, b in zip(*(s.next_chunk() for s in streams)):
            np.testing.assert_array_equal(a, b)


def test_a_prepared_set_is_found_by_its_entries_whatever_its_list_is_called(corpus, tmp_path):
    from lrac.train.data import prepared, run_stages

    listing = [f"{u.uid} {u.path}" for u in load_source(corpus)]
    first, renamed = tmp_path / "valid.scp", tmp_path / "elsewhere" / "valid_copy.scp"
    renamed.parent.mkdir()
    first.write_text("\n".join(listing) + "\n")
    renamed.write_text("\n".join(listing) + "\n")
    cache = tmp_path / "dump"
    utts = run_stages("valid", first, cache, 1, 3, SR, 2.9, 10.0, report=lambda line: None)
    assert prepared(cache, "valid", renamed) == utts
    first.write_text("\n".join(listing[1:]) + "\n")      # the list changed since its stages ran
    assert prepared(cache, "valid", first) is None
    # a cache of an earlier version names its source by path only, and is found by it
    for folder in (cache / "valid", cache / "org" / "valid", cache / "checked" / "valid"):
        (folder / "source").write_text(f"{first.resolve()}\n")
    assert prepared(cache, "valid", first) == utts and prepared(cache, "valid", renamed) is None


def test_run_stages_caches_by_source_and_resumes_from_any_stage(corpus, tmp_path):
    from lrac.train.data import prepared, run_stages

    cache, lines = tmp_path / "dump", []
    utts = run_stages("train", corpus, cache, 1, 3, SR, 2.9, 5.0, report=lines.append)
    assert {u.uid for u in utts} == {"a_one", "a_two"}
    assert len(lines) == 3 and "skipped" in lines[0]  # broken file counted at stage 1
    assert prepared(cache, "train", corpus) == utts
    assert prepared(cache, "train", tmp_path) is None  # a cache made from another source is ignored
    # stage 3 alone reads stage 2's cache (different bounds, no re-check, no re-conversion)
    again = run_stages("train", corpus, cache, 3, 3, SR, 2.9, 10.0, report=lines.append)
    assert {u.uid for u in again} == {"a_one", "a_two", "b_deep_three"}
    assert all("/org/train/wav/" in u.path for u in again)
    # noise lists only get stage 1
    noise = run_stages("noise", corpus, cache, 1, 3, SR, speech=False, report=lines.append)
    assert len(noise) == 5 and not (cache / "org" / "noise").exists()

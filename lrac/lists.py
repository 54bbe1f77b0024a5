"""List files and folders of audio: the one reader and writer of lrac's lists.

A list is Kaldi's ``wav.scp``: one ``<id> <path>`` per line; lrac also reads one bare path per line
(the id is then the path without suffix, ``/`` as ``_``), skips empty lines and ``#`` comments, and
takes a relative path from the list's folder, else from its parent folders (Kaldi lists are relative
to the recipe root). Imports nothing of lrac but :mod:`lrac.audio`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .audio import AUDIO_SUFFIXES, AudioError


def _resolve(raw: str, base: Path) -> str:
    """An absolute path for list entry ``raw``: next to the list, else in the list's parent folders
    (a missing file keeps the first, so that the error names it)."""
    p = Path(raw).expanduser()
    if p.is_absolute():
        return str(p)
    for folder in (base, *base.parents):
        if (folder / p).exists():
            return str(folder / p)
    return str(base / p)


def id_of_path(path: str) -> str:
    """The id of a bare path: without suffix and leading ``/``, folders joined by ``_``."""
    return Path(path).with_suffix("").as_posix().strip("/").replace("/", "_")


def read_scp(path: str | Path, keep_pipes: bool = False) -> list[tuple[str, str]]:
    """``[(id, path)]`` of a list file (see the module docstring).

    A Kaldi pipe command (a line ending in ``|``) is refused with its line number, or, with
    ``keep_pipes``, kept as it is for a later stage to count and skip (training data). A path
    followed by more columns (a sampling rate) keeps the path. Raises :class:`AudioError` for a
    missing list."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: list file not found")
    base = path.resolve().parent
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if line.endswith("|"):
            if not keep_pipes:
                raise AudioError(f"{path}:{n}: pipe commands are not supported ({line!r})")
            entries.append((parts[0], parts[1] if len(parts) > 1 else line))
            continue
        if len(parts) == 1:
            entries.append((id_of_path(parts[0]), _resolve(parts[0], base)))
            continue
        uid, rest = parts
        resolved = _resolve(rest, base)
        if not os.path.exists(resolved) and len(rest.split()) > 1:   # <id> <path> <more columns>
            resolved = _resolve(rest.split()[0], base)
        entries.append((uid, resolved))
    return entries


def write_scp(path: str | Path, entries: dict[str, str | Path] | list[tuple[str, str | Path]],
              sort: bool = True) -> None:
    """Write ``<id> <path>`` lines (sorted by id unless ``sort`` is false) atomically; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = list(entries.items()) if isinstance(entries, dict) else list(entries)
    if sort:
        items.sort(key=lambda item: item[0])
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text("".join(f"{uid} {target}\n" for uid, target in items))
    os.replace(tmp, path)


def audio_files(folder: str | Path) -> list[Path]:
    """Every audio file under ``folder`` (recursive, sorted; suffixes of :data:`AUDIO_SUFFIXES`)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def list_audio(source: str | Path) -> list[tuple[str, str]]:
    """Audio inputs of a folder (recursive), a ``wav.scp``-style list, or a single file.

    Returns ``[(name, path)]`` where ``name`` is the path relative to the folder without suffix
    (folders), the utterance id (lists) or the file stem (a single file)."""
    source = Path(source)
    if source.is_dir():
        return [(str(p.relative_to(source).with_suffix("")), str(p)) for p in audio_files(source)]
    if source.suffix == ".scp" or source.name.endswith("wav.scp"):
        return read_scp(source)
    if not source.exists():
        raise AudioError(f"{source}: not found")
    return [(source.stem, str(source))]

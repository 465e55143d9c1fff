"""What dsharp wrote in an output folder it shares with the user (``dsharp sample --out``,
``dsharp eval --images``): a small record, ``RECORD_NAME`` in that folder, names each file
of the last set written there with its SHA-256.

A new set written to the folder that rewrites some of the earlier set's files (a rerun:
4 prompts, then the first 2; 4 seeds, then 2) removes the files of the earlier set it does
not rewrite (images 2 and 3 would else pass for this run's), and only those: a file is
removed only while it is named in the record and still holds what dsharp wrote, so a file
the user put there, or replaced, is never touched. A set that rewrites none of them (other
prompts or seeds, as two samples into the default ``samples`` folder) is another run's: the
earlier one is kept whole. A record that cannot be read, or a name in it that is not a
plain file name, removes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from dsharp.io import atomic_write_json

RECORD_NAME = ".dsharp-files.json"


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def read_record(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` of the folder's record; empty where there is none or it
    cannot be read (nothing is then removed: better an old file kept than a user's lost)."""
    try:
        data = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {
        name: sha
        for name, sha in files.items()
        if isinstance(name, str) and isinstance(sha, str) and _plain(name)
    }


def _plain(name: str) -> bool:
    """A file name of the folder itself: a record naming ``../x`` or a path removes nothing."""
    return bool(name) and name not in (".", "..", RECORD_NAME) and Path(name).name == name


def stale_files(
    folder: Path, record: dict[str, str], written: Iterable[str], others: Iterable[str] = ()
) -> dict[str, str]:
    """The files of ``record`` that the new set (``written``: the names it records) does not
    rewrite and that still hold what dsharp wrote: ``{name: sha256}``; none where it rewrites
    none of the record's files (another run's set, kept whole). ``others``: the new set's
    other files in the folder (a contact sheet, a result), never stale."""
    new = set(written)
    if not new & set(record):
        return {}
    keep = new | set(others)
    stale = {}
    for name, sha in record.items():
        path = folder / name
        if name in keep or path.is_symlink() or not path.is_file():
            continue
        try:
            if digest(path) == sha:
                stale[name] = sha
        except OSError:  # unreadable: not known to be dsharp's, kept
            continue
    return stale


def write_record(path: Path, files: dict[str, str]) -> None:
    """The record (at ``path``: its staged file, when written as part of a set)."""
    atomic_write_json(path, {"written_by": "dsharp", "files": dict(sorted(files.items()))})


def others_in(folder: Path, names: Iterable[str], suffix: str = ".png") -> list[str]:
    """The ``suffix`` files of ``folder`` other than ``names``: files dsharp did not record
    writing (the user's, or an older dsharp's), kept, that a reader may take for the set's."""
    keep = set(names)
    try:
        found = [p.name for p in Path(folder).iterdir() if p.suffix.lower() == suffix]
    except OSError:
        return []
    return sorted(n for n in found if n not in keep and not n.startswith("."))

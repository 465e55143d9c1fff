"""One writer per run folder: an advisory lock that a second dsharp process is refused.

The lock is per process and reentrant within it, so the ``train`` command can hold a folder
from before the model loads until its report is written while the trainer inside it takes
the same lock for its own lifetime (as it must when used on its own, e.g. by studies).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_FILE = ".dsharp.lock"

# folder (resolved) -> (open lock file, how many holders in this process)
_held: dict[Path, tuple[IO[str], int]] = {}


class FolderLock:
    """One holder's share of a folder's lock; ``close`` (or leaving a ``with``) gives it up.
    The file lock itself goes when the process's last holder closes."""

    def __init__(self, key: Path) -> None:
        self._key: Path | None = key

    def close(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        handle, holders = _held[key]
        if holders > 1:
            _held[key] = (handle, holders - 1)
        else:
            del _held[key]
            handle.close()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold_folder_lock(folder: Path, what: str) -> FolderLock | None:
    """An exclusive lock on ``folder`` (which must exist), held until the returned object is
    closed, so that two processes never write one run folder at once (their metrics would
    interleave and one run's checkpoints replace the other's). ``RuntimeError`` naming
    ``what`` (the folder's role, e.g. ``output_dir``) when another process holds it. None
    where there are no advisory locks (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    key = Path(folder).resolve()
    if key in _held:
        handle, holders = _held[key]
        _held[key] = (handle, holders + 1)
        return FolderLock(key)
    handle = open(key / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"{what} {folder}: another dsharp process is writing to it; wait for it to "
            "finish, or choose another folder"
        ) from None
    _held[key] = (handle, 1)
    return FolderLock(key)


@contextmanager
def claimed_folder(folder: Path, what: str) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the ``with`` block. A folder this
    call created is removed again when the block leaves nothing in it but the lock file (a
    run that failed to start), so a typo'd recipe leaves no empty run folder behind (parent
    folders it made, such as ``runs/``, stay)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = hold_folder_lock(folder, what)
    try:
        yield folder
    finally:
        # removed while still locked: a process that takes the lock after the release must
        # not find its folder deleted under it
        if created and folder.is_dir() and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(folder, ignore_errors=True)
        if lock is not None:
            lock.close()

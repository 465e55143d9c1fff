"""One writer per run folder: an advisory lock that a second dsharp process is refused.

The lock is per process and reentrant within it, so the ``train`` command can hold a folder
from before the model loads until its report is written while the trainer inside it takes
the same lock for its own lifetime (as it must when used on its own, e.g. by studies).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_FILE = ".dsharp.lock"

# folder (resolved) -> (open lock file, how many holders in this process)
_held: dict[Path, tuple[IO[str], int]] = {}


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock: it is writing a run there."""


class FolderLock:
    """One holder's share of a folder's lock; ``close`` (or leaving a ``with``) gives it up.
    The file lock itself goes when the process's last holder closes."""

    def __init__(self, key: Path) -> None:
        self._key: Path | None = key

    def close(self) -> None:
        """Give up this holder's share; closing twice is harmless (``with`` and ``finally``
        may both do it)."""
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
    interleave and one run's checkpoints replace the other's). ``FolderInUseError`` naming
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
    if not _lock_exclusive(handle, fcntl):
        handle.close()
        raise FolderInUseError(
            f"{what} {folder}: another dsharp process is writing to it; wait for it to "
            "finish, or choose another folder"
        ) from None
    _held[key] = (handle, 1)
    return FolderLock(key)


def _lock_exclusive(handle: IO[str], fcntl, attempts: int = 10, pause_s: float = 0.05) -> bool:
    """Take ``handle``'s exclusive lock, trying for about half a second: a ``dsharp runs``
    that is asking whether the folder is in use holds it for an instant, and a run starting
    at that instant must not be refused."""
    for attempt in range(attempts):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(pause_s)
    return False


def locked_by_another_process(folder: Path) -> bool:
    """Whether another process holds ``folder``'s lock now: a run in progress, for
    ``dsharp runs``. Never creates the lock file; False where there are no advisory locks."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    key = Path(folder).resolve()
    if key in _held:
        return False
    try:
        handle = open(key / LOCK_FILE, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


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

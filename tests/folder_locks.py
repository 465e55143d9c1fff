"""A run folder's lock as another process holds it, for tests of who may write a run folder."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dsharp import folder_lock


@contextmanager
def another_process_holds(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock as another process would: flock on a file opened separately
    conflicts with this process's own lock, just as a second process's would."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / folder_lock.LOCK_FILE, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def free_to_another_process(folder: Path) -> bool:
    """Whether another process could take ``folder``'s lock now."""
    with open(folder / folder_lock.LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

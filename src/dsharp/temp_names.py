"""Temp files named after the process that writes them, so that a later run can delete the
ones a killed writer left (SIGKILL, an OOM kill or a power cut skip every cleanup) without
ever deleting a live writer's.

A name ends in ``.{machine}-{pid}-{start}-{random}.tmp``: ``machine`` is a hash of this
boot (Linux's boot id), pid namespace and time namespace (the host name elsewhere), ``start``
the process's start time (clock ticks since boot, 0 where unknown), which tells a reused pid
from the writer. The time namespace is part of it as ``/proc/PID/stat`` gives a start time
shifted by the reader's: read from another one, a live writer's would not match. A temp
file is a dead writer's when its machine is this one and its pid is not running, or runs
with another start time. Files of another machine (a folder on a shared
disk written from another node, a container with its own pids), of an older dsharp (a
random token alone) or on a system with no boot id (Windows, macOS: the host name alone,
which two computers sharing a folder can both have) are never removed: nothing here can
tell whether their writer still runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import sys
from contextlib import suppress
from pathlib import Path

_TOKEN = re.compile(r"\.(?P<machine>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+\.tmp$")

_own: dict[int, tuple[str, str]] = {}  # pid -> (machine, start): forked workers differ

# the most bytes of a file's name that its temp files' names repeat: with the token (up to
# about 50 bytes) a set's temp file of a staged file (both) stays under 255, the name limit
# of most filesystems, however long the file's own name
_NAME_BYTES = 120


def temp_token() -> str:
    """A token for one temp file (or set of them) of this process: unique, and naming its
    writer so that :func:`remove_dead_temps` can tell when the writer is gone."""
    machine, start = _identity()
    return f"{machine}-{os.getpid()}-{start}-{secrets.token_hex(4)}"


def temp_stem(name: str) -> str:
    """``name`` as a temp file's name holds it: a long one (an ``eval --out`` JSON) cut to at
    most 120 bytes, or its temp file's name would be too long to create. The cut one ends in
    a hash of the whole, as two files of one set share their token: ``a...x.png`` and
    ``a...y.png`` cut alike must still be staged apart."""
    raw = os.fsencode(name)
    if len(raw) <= _NAME_BYTES:
        return name
    cut = name[: _NAME_BYTES - 9]
    while len(os.fsencode(cut)) > _NAME_BYTES - 9:  # whole characters
        cut = cut[:-1]
    return f"{cut}~{hashlib.sha256(raw).hexdigest()[:8]}"


def remove_dead_temps(folder: Path) -> None:
    """Delete the temp files and folders in ``folder`` whose writer is known dead. Best
    effort: a folder that is missing or cannot be listed or written is left as it is."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        found = _TOKEN.search(entry.name)
        if not entry.name.startswith(".") or found is None or not _dead(found):
            continue
        with suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _dead(found: re.Match[str]) -> bool:
    machine, start = _identity()
    if found["machine"] != machine or sys.platform == "win32" or _boot_id() is None:
        return False  # no boot id (macOS): two hosts of one name could share the folder
    pid = int(found["pid"])
    if pid == os.getpid():
        return found["start"] != start  # ours, or a process that had our pid before
    running = _start_time(pid)
    if running is not None:
        return found["start"] != "0" and running != found["start"]  # 0: cannot tell
    try:  # not in /proc (none here, or it hides other users' processes): ask the kernel
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except OSError:  # exists, but is another user's
        return False
    return False


def _identity() -> tuple[str, str]:
    pid = os.getpid()
    if pid not in _own:
        _own[pid] = (_machine(), _start_time(pid) or "0")
    return _own[pid]


def _boot_id() -> str | None:
    """This boot's id (Linux), None elsewhere."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _machine() -> str:
    """This boot, pid and time namespace: a pid means the same process only within the first
    two, and its start time reads the same only within the last."""
    parts = [] if (boot := _boot_id()) is None else [boot]
    for read in (
        lambda: os.readlink("/proc/self/ns/pid"),
        lambda: os.readlink("/proc/self/ns/time"),  # Linux 5.6+; none before, nor time ns
    ):
        with suppress(OSError):
            parts.append(read())
    if not parts:
        parts.append(socket.gethostname())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (name) ": the name may hold ")"
    return fields[19] if len(fields) > 19 else None

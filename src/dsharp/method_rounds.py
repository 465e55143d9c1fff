"""A round of samples in progress (DDPO, D3PO) kept in a checkpoint, one file per process.

Those methods train on a round over several engine calls; the samples were drawn with
weights that a checkpoint inside the round no longer holds, so a resume could not draw them
again. Keeping the round lets a resume inside it continue exactly like an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: The layout of a round file: ``{"format": ROUND_FORMAT, "state": method.round_state()}``,
#: every value a tensor, a Python number or string, or a list, tuple or dict of them, so that
#: it loads with torch's ``weights_only`` (a checkpoint someone shares cannot run code, and
#: renaming a class of dsharp's leaves old checkpoints readable). Bumped when the layout of
#: a method's ``round_state`` changes; a file of another format is not loaded (a note).
ROUND_FORMAT = 1


@dataclass(frozen=True)
class RoundLoad:
    """What :func:`load_round` did. True where the method has its round back; ``unread``
    says why a round file the checkpoint has was left alone (kept in another format)."""

    kept: bool
    unread: str | None = None

    def __bool__(self) -> bool:
        return self.kept


def round_file(checkpoint: Path, process_index: int) -> Path:
    """Where process ``process_index``'s round lives in a checkpoint (each process samples
    its own)."""
    return Path(checkpoint) / f"method_round_{process_index}.pt"


def save_round(method: Any, folder: Path, process_index: int) -> None:
    """Write the method's round in progress into ``folder`` (nothing between rounds, or for
    a method without rounds). ``folder`` is the checkpoint's temp folder, renamed whole."""
    state = getattr(method, "round_state", lambda: None)()
    if state is not None:
        torch.save({"format": ROUND_FORMAT, "state": state}, round_file(folder, process_index))


def load_round(
    method: Any, checkpoint: Path, process_index: int, processes: int, device: Any
) -> RoundLoad:
    """Give the method back the round its checkpoint kept; false where it kept none (a
    checkpoint between rounds, or an older dsharp's) or kept it in another format (an
    older dsharp's pickle, which only an unpickler that runs code could read: ``unread``
    says so, and the run samples a fresh round as without one). A file that cannot be
    read, or one missing while another process's is there (each would go on differently,
    and a process that samples afresh waits forever for the others in the round's gather:
    every process checks every file, so all see it alike and stop), is a ValueError naming
    it."""
    if not hasattr(method, "load_round_state"):
        return RoundLoad(False)
    paths = [round_file(checkpoint, i) for i in range(processes)]
    there = [path.is_file() for path in paths]
    if not any(there):
        return RoundLoad(False)
    if not all(there):
        missing, kept = (paths[there.index(b)] for b in (False, True))
        raise ValueError(
            f"train.resume: {missing} is missing, though {kept.name} is there "
            f"({_advice(checkpoint)})"
        )
    for path in paths:
        unread = _unread_format(path, checkpoint)
        if unread is not None:
            return RoundLoad(False, unread)
    path = paths[process_index]
    where = torch.device(device)
    if where.type == "cpu":  # accelerate's ``cpu:<process>`` on several CPU processes:
        where = torch.device("cpu")  # torch.load restores to no indexed CPU
    try:
        kept = torch.load(path, map_location=where, weights_only=True)
        method.load_round_state(kept["state"])
    except Exception as err:
        raise _cannot_load(path, checkpoint, err) from err
    return RoundLoad(True)


def _unread_format(path: Path, checkpoint: Path) -> str | None:
    """Why the round file at ``path`` is not loaded (another format), None for one of
    :data:`ROUND_FORMAT`; a ValueError naming it where it is damaged or not dsharp's.

    Reads the file's pickle without running it: a file that pickles classes is an older
    dsharp's where they are all dsharp's own (its round, conditioning and metrics), and
    anything else is no round dsharp wrote (nothing is loaded either way)."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        classes = sorted(get_unsafe_globals_in_checkpoint(path))
    except Exception as err:
        raise _cannot_load(path, checkpoint, err) from err
    if classes and all(name.startswith("dsharp.") for name in classes):
        return f"{path} keeps the round in an older dsharp's format, which is not loaded"
    if classes:
        reason = f"it pickles {', '.join(classes[:3])}, which a round of dsharp's never holds"
        raise _cannot_load(path, checkpoint, reason)
    try:  # tensors stay in the file (mmap): only the format is read here
        kept = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise _cannot_load(path, checkpoint, err) from err
    version = kept.get("format") if isinstance(kept, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise _cannot_load(path, checkpoint, "no format version: not a round file of dsharp's")
    if version != ROUND_FORMAT:
        return (
            f"{path} keeps the round in format {version}, which this dsharp does not read "
            f"(it reads {ROUND_FORMAT})"
        )
    return None


def _cannot_load(path: Path, checkpoint: Path, err: Exception | str) -> ValueError:
    """One line naming the round file, why it cannot be loaded, and the way on."""
    from dsharp.error_text import one_line

    return ValueError(
        f"train.resume: {path}: cannot be loaded ({one_line(err)}) ({_advice(checkpoint)})"
    )


def _advice(checkpoint: Path) -> str:
    from dsharp.checkpoints import damaged_checkpoint_advice

    return damaged_checkpoint_advice(checkpoint)

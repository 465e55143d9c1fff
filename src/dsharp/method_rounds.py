"""A round of samples in progress (DDPO, D3PO) kept in a checkpoint, one file per process.

Those methods train on a round over several engine calls; the samples were drawn with
weights that a checkpoint inside the round no longer holds, so a resume could not draw them
again. Keeping the round lets a resume inside it continue exactly like an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def round_file(checkpoint: Path, process_index: int) -> Path:
    """Where process ``process_index``'s round lives in a checkpoint (each process samples
    its own)."""
    return Path(checkpoint) / f"method_round_{process_index}.pt"


def save_round(method: Any, folder: Path, process_index: int) -> None:
    """Write the method's round in progress into ``folder`` (nothing between rounds, or for
    a method without rounds). ``folder`` is the checkpoint's temp folder, renamed whole."""
    state = getattr(method, "round_state", lambda: None)()
    if state is not None:
        torch.save(state, round_file(folder, process_index))


def load_round(
    method: Any, checkpoint: Path, process_index: int, processes: int, device: Any
) -> bool:
    """Give the method back the round its checkpoint kept; False where it kept none (a
    checkpoint between rounds, or an older dsharp's). A file that cannot be read, or one
    missing while another process's is there (each would go on differently, and a process
    that samples afresh waits forever for the others in the round's gather: every process
    sees it alike and stops), is a ValueError naming it."""
    from dsharp.checkpoints import damaged_checkpoint_advice
    from dsharp.error_text import one_line

    if not hasattr(method, "load_round_state"):
        return False
    there = [round_file(checkpoint, i).is_file() for i in range(processes)]
    if not any(there):
        return False
    if not all(there):
        missing, kept = (round_file(checkpoint, there.index(b)) for b in (False, True))
        raise ValueError(
            f"train.resume: {missing} is missing, though {kept.name} is there "
            f"({damaged_checkpoint_advice(checkpoint)})"
        )
    path = round_file(checkpoint, process_index)
    try:
        # the round holds the method's own objects (conditioning, metrics): not weights only,
        # as accelerate's random_states_*.pkl of the same checkpoint
        state = torch.load(path, map_location=device, weights_only=False)
        method.load_round_state(state)
    except Exception as err:
        raise ValueError(
            f"train.resume: {path}: cannot be loaded ({one_line(err)}) "
            f"({damaged_checkpoint_advice(checkpoint)})"
        ) from err
    return True

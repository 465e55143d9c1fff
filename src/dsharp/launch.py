"""What a launcher (``accelerate launch``, torchrun, mpirun) told this process: how many
processes it started and whether this one is the first, known from the environment before
any model loads; and the one exchange the commands that are not training need between them."""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

#: Where launchers put a process's rank before accelerate starts: torchrun / accelerate
#: launch, then the MPI launchers accelerate reads for multi-CPU training.
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
#: Where launchers put the number of processes (accelerate's order, as for the rank).
SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launch_size() -> int:
    """How many processes the launch started (1 without a launcher)."""
    for name in SIZE_VARIABLES:
        if name in os.environ:
            try:
                return int(os.environ[name])
            except ValueError:
                return 1
    return 1


def launcher_rank_zero() -> bool:
    """Whether this is the launch's first process (or the only one): the one that prints
    and writes."""
    for name in RANK_VARIABLES:
        if name in os.environ:
            return os.environ[name] == "0"
    return True


def broadcast_from_main(value: T) -> T:
    """The first process's ``value`` on every process (itself without a launcher), so that
    all of them act on one decision. It starts the process group as the engine's
    ``Accelerator`` would, and, as the first collective, it waits for every process."""
    if launch_size() <= 1:
        return value
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if state.num_processes <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave_process_group() -> None:
    """Leave the launch's process group if this process is still in one (a study's plan
    exchange joins it; training leaves it when a row ends). A process that exits while it
    still holds a gloo group can abort at exit ("terminate called without an active
    exception"), and the launcher then stops the other processes mid-evaluation."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def stopped_by_the_launcher(seconds: float) -> bool:
    """Wait up to ``seconds`` for the launcher to stop this process (SIGTERM, or SIGINT as a
    Ctrl-C reaches every process); whether it did. A launcher stops the others once one of
    its processes exits with an error. Outside the main thread, where no signal handler can
    be set, it returns False at once. The handler only notes the signal (no exception), so
    that one arriving while the previous handlers are put back is not lost as an error."""
    import signal
    import threading
    import time

    from dsharp.interrupts import signals_noted

    if threading.current_thread() is not threading.main_thread():
        return False
    with signals_noted(signal.SIGINT, signal.SIGTERM) as caught:
        end = time.monotonic() + seconds
        while not caught and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return bool(caught)

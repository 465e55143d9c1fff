"""Stop a training run at a step boundary on Ctrl-C or SIGTERM, so that it can be resumed.

A KeyboardInterrupt raised in the middle of an optimizer step leaves weights half updated and
loses everything since the last checkpoint. Instead, the first SIGINT or SIGTERM (what a job
scheduler sends before it kills a job) only asks the loop to stop: it finishes the step,
saves a checkpoint and raises :class:`TrainingInterrupted`. A second Ctrl-C stops at once,
except under a launcher of several processes, which repeats each stop to every process.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on request, after saving a checkpoint of ``step``; ``complete``
    when that was the last step (the stop came during it), so only what follows training
    was left out."""

    def __init__(self, step: int, run_dir: Path, *, complete: bool = False) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint saved in {run_dir}")
        self.step = step
        self.run_dir = run_dir
        self.complete = complete


@contextmanager
def signals_noted(*signals: int) -> Iterator[list[int]]:
    """While entered (in the main thread), each of ``signals`` is only noted in the yielded
    list, so that no exception comes in the middle of the block: the caller decides after it
    what a noted signal does. The previous handlers come back on leaving. A signal whose
    handler was set outside Python (``getsignal`` gives None, which cannot be set back) is
    left as it is; outside the main thread, where Python cannot set handlers, none is noted."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}
    try:
        for sig in previous:
            signal.signal(sig, lambda signum, _frame: caught.append(signum))
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopRequests:
    """While entered (in the main thread), SIGINT and SIGTERM set :attr:`requested` instead
    of stopping the process; a second SIGINT raises KeyboardInterrupt as usual. Outside the
    main thread, where Python cannot install handlers, it does nothing. A signal ignored when
    it is entered stays ignored, and one whose handler was set outside Python (``getsignal``
    gives None) stays with it: ``signal.signal`` cannot put None back, so leaving training
    raised a TypeError and our handler stayed."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                if signal.getsignal(sig) in (signal.SIG_IGN, None):  # see the class docstring
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # nothing Python can put back
                signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Only asks the loop to stop (it saves a checkpoint at the step's end), where
        dsharp.cli's handler stops at once: a stop mid-step would lose the step's work."""
        from dsharp.launch import launch_size, launcher_rank_zero

        # A launcher sends each process the stop again (a Ctrl-C reaches a process from the
        # terminal and from the launcher, which then adds SIGTERM): a repeat is that echo,
        # not a second Ctrl-C, and stopping at once would lose the checkpoint.
        launched = launch_size() > 1
        if self.requested:
            if signum == signal.SIGINT and not launched:
                raise KeyboardInterrupt
            return
        self.requested = True
        if launched and not launcher_rank_zero():  # the first process says it, once
            return
        name = signal.Signals(signum).name
        again = "" if launched else " (Ctrl-C again to stop at once, without one)"
        print(
            f"\n{name}: stopping after this step and saving a checkpoint{again}",
            file=sys.stderr,
            flush=True,
        )

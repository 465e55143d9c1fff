"""Stop a training run at a step boundary on Ctrl-C or SIGTERM, so that it can be resumed.

A KeyboardInterrupt raised in the middle of an optimizer step leaves weights half updated and
loses everything since the last checkpoint. Instead, the first SIGINT or SIGTERM (what a job
scheduler sends before it kills a job) only asks the loop to stop: it finishes the step,
saves a checkpoint and raises :class:`TrainingInterrupted`. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading
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


class StopRequests:
    """While entered (in the main thread), SIGINT and SIGTERM set :attr:`requested` instead
    of stopping the process; a second SIGINT raises KeyboardInterrupt as usual. Outside the
    main thread, where Python cannot install handlers, it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                if signal.getsignal(sig) is signal.SIG_IGN:  # a job that ignores it keeps so
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        print(
            f"\n{name}: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to stop at once, without one)",
            file=sys.stderr,
            flush=True,
        )

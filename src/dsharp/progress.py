"""Rich progress bars that show what a user watches: reward and loss during training,
images done during sampling and evaluation (and, for an inference-time method, whose one
image can take long, the network evaluations done).

Where stderr is not a terminal (a log file, ``nohup``, a job scheduler), rich draws its bar
only when the work ends; there the bars also write a plain line every
:data:`LOG_EVERY_S` seconds, so that a long job's log shows that it moves."""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)

LOG_EVERY_S = 30.0
"""Seconds between the plain progress lines written where stderr is not a terminal."""


class _Progress(Progress):
    """A rich Progress that, off a terminal, also writes ``label: done/total, elapsed, left,
    fields`` lines, each task's at most every ``log_every_s`` seconds and when it completes:
    a task updated often (the network evaluations) must not take every line from one
    updated seldom (the images done)."""

    def __init__(self, *columns: Any, log_every_s: float | None = None, **kwargs: Any):
        super().__init__(*columns, **kwargs)
        self.log_every_s = LOG_EVERY_S if log_every_s is None else log_every_s
        self._log_lines = not self.disable and not self.console.is_terminal
        self._last_line: dict[Any, float] = {}  # each task's last line written
        self._first_completed: dict[Any, float] = {}
        self._finished_lines: set[Any] = set()  # a finished task's line is written once

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> Any:
        task_id = super().add_task(description, *args, **kwargs)
        self._first_completed[task_id] = self._tasks[task_id].completed  # a resume's start
        self._last_line[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: Any, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: Any, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: Any) -> None:
        if not self._log_lines:
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        if task_id in self._finished_lines and task.finished:
            return  # a counter past its estimated total goes on: its line was written
        if now - self._last_line.get(task_id, 0.0) < self.log_every_s and not task.finished:
            return
        self._last_line[task_id] = now
        if task.finished:
            self._finished_lines.add(task_id)
        total = int(task.total) if task.total is not None else "?"
        parts = [f"{task.description}: {int(task.completed)}/{total}"]
        parts.append(f"{task.elapsed or 0:.0f} s elapsed")
        left = _time_left(task, self._first_completed.get(task_id, 0))
        if left is not None and not task.finished:
            parts.append(f"about {left:.0f} s left")
        parts += [f"{key} {value}" for key, value in task.fields.items()]
        self.console.print(", ".join(parts), markup=False, highlight=False)


def _time_left(task: Any, first_completed: float) -> float | None:
    """Seconds left at the task's mean rate since it started. Rich's own estimate uses
    only the last 30 s of updates, which lines written every 30 s about coarse batches
    (16 images at a time) rarely hold two of, so it was mostly missing."""
    done = task.completed - first_completed
    if task.total is None or done <= 0 or not task.elapsed:
        return None
    return task.elapsed / done * max(task.total - task.completed, 0)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrainProgress:
    """Step bar with the latest reward, loss and step time."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.progress = _Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("reward [cyan]{task.fields[reward]}"),
            TextColumn("loss [magenta]{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.progress.add_task(
            "train", total=total, completed=start, reward="-", loss="-"
        )

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Move the bar to ``step`` and show that step's reward and loss."""
        self.progress.update(
            self.task,
            completed=step,
            reward=_fmt(metrics.get("reward")),
            loss=_fmt(metrics.get("loss")),
        )


def task_progress(label: str, enabled: bool = True) -> Progress:
    """A plain counter bar for sampling and evaluation loops (``label`` names its first
    task; each row shows its own task's name)."""
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )

"""Progress off a terminal: rich draws its bar only at the end there, so plain lines show
that a long job moves."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import TextColumn

from dsharp.progress import _Progress


def _run(terminal: bool, log_every_s: float) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100)
    with _Progress(TextColumn("bar"), console=console, log_every_s=log_every_s) as progress:
        task = progress.add_task("eval", total=3, reward="-")
        for step in range(3):
            progress.update(task, completed=step + 1, reward=f"0.{step}")
    return out.getvalue()


def test_off_a_terminal_each_update_past_the_interval_writes_a_line():
    lines = [line for line in _run(False, 0.0).splitlines() if line.startswith("eval: ")]
    assert [line.split(",")[0] for line in lines] == ["eval: 1/3", "eval: 2/3", "eval: 3/3"]
    assert lines[-1].endswith("reward 0.2") and "s elapsed" in lines[-1]


def test_off_a_terminal_lines_wait_for_the_interval_but_the_last_is_written():
    lines = [line for line in _run(False, 3600.0).splitlines() if line.startswith("eval: ")]
    assert [line.split(",")[0] for line in lines] == ["eval: 3/3"]


def test_on_a_terminal_only_the_bar_shows():
    out = _run(True, 0.0)
    assert "eval: " not in out
    assert "\x1b[2Kbar" in out  # the bar itself, drawn in place


def test_lines_before_the_end_give_the_time_left_at_the_mean_rate(monkeypatch):
    """Two updates 30 s apart are enough (rich's own estimate needed more), and a resumed
    task counts its rate from where it started, not from zero."""
    import dsharp.progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with _Progress(TextColumn("bar"), console=console, log_every_s=0.0) as progress:
        task = progress.add_task("train", total=10, completed=4)
        state = progress._tasks[task]
        monkeypatch.setattr(type(state), "elapsed", property(lambda self: 30.0))
        progress.update(task, completed=6)  # 2 steps in 30 s: 4 steps left, 60 s
        progress.update(task, completed=10)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("train: ")]
    assert lines[0] == "train: 6/10, 30 s elapsed, about 60 s left"
    assert lines[1] == "train: 10/10, 30 s elapsed"  # finished: nothing left to say
    assert dsharp.progress._time_left(state, 10) is None  # no progress yet: no estimate


def test_off_a_terminal_a_counter_past_its_total_writes_its_finished_line_once():
    """A counter whose total is an estimate (an inference-time method's network evaluations,
    from its first image) may go past it: a finished task wrote a line at every update."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with _Progress(TextColumn("bar"), console=console, log_every_s=0.0) as progress:
        task = progress.add_task("evals", total=2)
        for _ in range(4):
            progress.advance(task)
    lines = [line.split(",")[0] for line in out.getvalue().splitlines() if ": " in line]
    assert lines == ["evals: 1/2", "evals: 2/2"]


def test_each_row_of_a_task_bar_shows_its_own_name(monkeypatch):
    """Every row showed the bar's label: a second row (the network evaluations) read as a
    second copy of the images' row."""
    import dsharp.progress

    out = io.StringIO()
    monkeypatch.setattr(dsharp.progress, "console", Console(file=out, force_terminal=True))
    with dsharp.progress.task_progress("sample") as progress:
        progress.add_task("sample", total=1)
        progress.add_task("sample network evaluations", total=None)
    assert "sample network evaluations" in out.getvalue()


def test_off_a_terminal_a_row_updated_often_leaves_lines_to_one_updated_seldom(monkeypatch):
    """An inference-time method's network evaluations move many times per image: sharing
    one interval with the images' row, they took every line, and a log no longer said how
    many images were done until the last one (images of 10 s, lines every 30 s)."""
    import types

    import dsharp.progress

    now = [0.0]
    monkeypatch.setattr(dsharp.progress, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with _Progress(TextColumn("bar"), console=console, log_every_s=30.0) as progress:
        images = progress.add_task("sample", total=9)
        evals = progress.add_task("sample network evaluations", total=None)
        for _ in range(9):
            for _ in range(20):  # 20 network evaluations of 0.5 s each
                now[0] += 0.5
                progress.advance(evals)
            progress.update(images, advance=1)
    lines = [line.split(",")[0] for line in out.getvalue().splitlines() if ": " in line]
    assert [line for line in lines if line.startswith("sample: ")] == [
        "sample: 3/9",
        "sample: 6/9",
        "sample: 9/9",
    ]
    assert "sample network evaluations: 60/?" in lines  # its own line every 30 s too

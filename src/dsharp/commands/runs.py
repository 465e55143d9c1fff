"""`dsharp runs [FOLDER]`: the run folders under FOLDER at a glance."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dsharp.commands.errors import user_errors
from dsharp.runs import RunSummary


def runs(
    folder: Path = typer.Argument(
        Path("runs"), metavar="FOLDER", help="Folder whose run folders to list."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List run folders, newest first, with their method, steps and newest score.

    Each row also says the model, whether the run finished or stopped, and which
    evaluation file its score comes from.
    """
    from dsharp.runs import find_runs

    with user_errors():
        found = find_runs(folder)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in found]))
        return
    if not found:
        typer.echo(f"{folder}: no run folders (none holds a recipe.yaml)")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    cells = {
        "run": [r.name for r in found],
        "method": [r.method or "-" for r in found],
        "model": [r.model or "-" for r in found],
        "steps": [_steps(r) for r in found],
        "score": ["-" if r.score is None else f"{r.score:.4f}" for r in found],
        "from": [_evaluation(r.score_from, r.score_step, r.step) for r in found],
        "updated": [r.updated for r in found],
    }
    # A method or model that every run shares is said once, in the title, so that the
    # other columns fit an 80-column terminal.
    shared = {name: cells[name][0] for name in ("method", "model") if len(set(cells[name])) == 1}
    title = f"dsharp runs {folder}"
    if shared:
        title += " (" + ", ".join(f"{k} {v}" for k, v in shared.items()) + ")"
    table = Table(box=box.SIMPLE_HEAD)
    columns = [name for name in cells if name not in shared]
    for name in columns:
        # Names fold onto more lines when narrow (the run's keeps a minimum width, or rich
        # squeezes it to nothing); numbers and times stay whole.
        table.add_column(
            name,
            justify="right" if name == "score" else "left",
            overflow="fold",
            no_wrap=name in ("steps", "score", "updated"),
            min_width=min(max(map(len, cells["run"])), 16) if name == "run" else None,
        )
    for i in range(len(found)):
        table.add_row(*(cells[name][i] for name in columns))
    console = Console()
    console.print(title, highlight=False, markup=False)  # above the table: not cut to its width
    console.print(table)
    stopped = [r for r in found if r.status == "stopped"]
    if stopped:
        typer.echo(
            f"{len(stopped)} stopped run(s): continue one with `dsharp train RECIPE "
            f"output_dir=RUN train.resume=latest`"
        )


def _evaluation(file_name: str | None, scored: int | None, newest: int | None) -> str:
    """Which evaluation gave the score: ``eval-shapes-heldout.json`` reads ``shapes-heldout``
    (``final``: the report after training), with ``@ step N`` when it scored a checkpoint
    older than the run's newest (the run trained on after it was evaluated)."""
    if file_name is None:
        return "-"
    name = file_name.removesuffix(".json").removeprefix("eval-").removeprefix("eval") or "eval"
    stale = scored is not None and newest is not None and scored < newest
    return f"{name} @ step {scored}" if stale else name


def _steps(run: RunSummary) -> str:
    """ "50/50", "10/20 stopped", "-/20 no checkpoint" or "eval only"."""
    if run.status == "evaluation only":
        return "eval only"
    done = "-" if run.step is None else str(run.step)
    total = "?" if run.max_steps is None else str(run.max_steps)
    return f"{done}/{total}" + ("" if run.status == "finished" else f" {run.status}")

"""`dsharp runs [FOLDER]`: the run folders under FOLDER at a glance."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dsharp.commands.errors import user_errors
from dsharp.runs import RunSummary


def runs(
    folder: Path = typer.Argument(Path("runs"), help="Folder whose run folders to list."),
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

    table = Table(title=f"dsharp runs {folder}", box=box.SIMPLE_HEAD)
    for name in ("run", "method", "model", "steps", "score", "from", "updated"):
        wraps = name in ("run", "model")  # the others stay on one line
        justify = "right" if name == "score" else "left"
        table.add_column(name, justify=justify, overflow="fold", no_wrap=not wraps)
    for r in found:
        table.add_row(
            r.name,
            r.method or "-",
            r.model or "-",
            _steps(r),
            "-" if r.score is None else f"{r.score:.4f}",
            _evaluation(r.score_from),
            r.updated,
        )
    Console().print(table)
    stopped = [r for r in found if r.status == "stopped"]
    if stopped:
        typer.echo(
            f"{len(stopped)} stopped run(s): continue one with `dsharp train RECIPE "
            f"output_dir=RUN train.resume=latest`"
        )


def _evaluation(file_name: str | None) -> str:
    """Which evaluation gave the score: ``eval-shapes-heldout.json`` reads ``shapes-heldout``
    (``final``: the report after training)."""
    if file_name is None:
        return "-"
    return file_name.removesuffix(".json").removeprefix("eval-").removeprefix("eval") or "eval"


def _steps(run: RunSummary) -> str:
    """ "50/50", "10/20 stopped", "-/20 no checkpoint" or "eval only"."""
    if run.status == "evaluation only":
        return "eval only"
    done = "-" if run.step is None else str(run.step)
    total = "?" if run.max_steps is None else str(run.max_steps)
    return f"{done}/{total}" + ("" if run.status == "finished" else f" {run.status}")

"""`dsharp merge RUN... --out DIR [--scale S]`: one model from several full fine-tuning runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dsharp.commands.errors import user_errors


def merge(
    sources: list[Path] = typer.Argument(
        ...,
        metavar="RUN",
        help="Run folders (their newest checkpoint) or checkpoint folders: full fine-tuning "
        "runs of one base model.",
    ),
    out: Path = typer.Option(..., "--out", help="New run folder for the merged model."),
    scale: float = typer.Option(
        1.0,
        "--scale",
        help="Multiple of the runs' mean weight change added to the base model: 1 averages "
        "the runs (a model soup), 2 extrapolates along what they share.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the merged run folder, the runs merged (checkpoint, step) and the scale "
        "as JSON.",
    ),
) -> None:
    """Merge runs of one recipe: base model + SCALE x the mean of their weight changes.

    The result is a run folder: use it with `dsharp eval --checkpoint OUT` or
    `dsharp sample --checkpoint OUT`. OUT/merge.json records the runs and the scale.
    """
    from dsharp.merge import merge_runs

    with user_errors():
        merged = merge_runs(sources, out, scale)
    notes = []
    for source in merged:  # said once the merge stands: a refused merge says only why
        planned = source.recipe.train.max_steps
        if source.step < planned:
            notes.append(
                f"{source.given} is at step {source.step} of its {planned}; merged as it is"
            )
            typer.echo(f"note: {notes[-1]}", err=True)
    if as_json:
        runs = [
            {"run": str(s.given), "checkpoint": str(s.checkpoint), "step": s.step} for s in merged
        ]
        typer.echo(json.dumps({"out": str(out), "runs": runs, "scale": scale, "notes": notes}))
        return
    runs = "1 run" if len(sources) == 1 else f"{len(sources)} runs"
    typer.echo(f"merged {runs} at scale {scale:g}: {out}")

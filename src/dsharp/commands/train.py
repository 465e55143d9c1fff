"""`dsharp train RECIPE [key.sub=value ...]`."""

from __future__ import annotations

from pathlib import Path

import typer

from dsharp.commands.errors import user_errors


def train(
    recipe: Path = typer.Argument(..., help="YAML recipe, e.g. recipes/quickstart.yaml."),
    overrides: list[str] = typer.Argument(
        None, help="Recipe overrides as key.sub=value, e.g. train.max_steps=2 output_dir=/tmp/run."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Fine-tune a model as a recipe says; writes a run folder (metrics, checkpoints, report)."""
    from dsharp.config import RecipeError, load_recipe

    try:
        cfg = load_recipe(recipe, overrides or [])
    except RecipeError as exc:
        typer.echo(f"recipe error: {exc}", err=True)
        raise typer.Exit(2) from None
    with user_errors("error"):
        from dsharp.engine import train as run_training

        run_dir = run_training(cfg, progress=progress)
        from accelerate import PartialState

        from dsharp.curves import CURVES_PNG
        from dsharp.posttrain import post_train_report, wants_report

        if PartialState().is_main_process:
            if (run_dir / CURVES_PNG).exists():
                typer.echo(f"training curves: {run_dir / CURVES_PNG}")
            if wants_report(cfg):
                report = post_train_report(cfg, run_dir, progress=progress)
                typer.echo(f"report: {report}")
    typer.echo(f"run folder: {run_dir}")

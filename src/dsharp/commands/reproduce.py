"""`dsharp reproduce STUDY.yaml [--dry-run] [--only LABEL ...]`: the runs behind one of the
paper's tables or figures, then the table or figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dsharp.commands.errors import (
    RECIPE_ERROR_EXIT,
    debugging,
    own_warnings_as_lines,
    user_errors,
)


def _plan_table(loaded, selected) -> object:
    """The plan as a rich table: row, folder, what will happen, its overrides (secrets in
    them redacted, as every message shows them: the plan goes to CI and job logs)."""
    from rich.table import Table

    from dsharp.redaction import shown_setting

    def shown(overrides: list[str]) -> str:
        return " ".join(shown_setting(o) for o in overrides)

    title = f"dsharp reproduce {loaded.path} ({loaded.study.kind}"
    title += f" {loaded.study.name})" if loaded.study.name else ")"
    table = Table(title=title)
    for col in ("row", "folder", "status", "recipe", "row overrides"):
        table.add_column(col, overflow="fold")
    for plan in loaded.rows:
        status = plan.status if plan in selected else f"{plan.status} (not selected)"
        if plan.conflict:
            status = "[red]conflict[/red]"
        recipe = str(plan.base) + ("" if plan.trained else " (no training)")
        overrides = shown(plan.overrides) or "-"
        table.add_row(plan.label, str(plan.run_dir), status, recipe, overrides)
    caption = []
    if loaded.common:
        caption.append("every row: " + shown(loaded.common))
    if loaded.given:
        caption.append("then, as given: " + shown(loaded.given))
    if caption:
        table.caption = "; ".join(caption)
    return table


def _plan_json(loaded, selected, dry_run: bool) -> dict[str, Any]:
    """The plan as ``--json`` prints it: the study, then each row's folder, status (what a
    run would do now), whether ``--only`` selected it, and a conflict; overrides redacted,
    as the table shows them."""
    from dsharp.redaction import shown_setting

    rows = [
        {
            "label": plan.label,
            "folder": str(plan.run_dir),
            "status": "conflict" if plan.conflict else plan.status,
            "selected": plan in selected,
            "trained": plan.trained,
            "recipe": str(plan.base),
            "overrides": [shown_setting(o) for o in plan.overrides],
            "conflict": plan.conflict,
        }
        for plan in loaded.rows
    ]
    return {
        "study": str(loaded.path),
        "kind": loaded.study.kind,
        "name": loaded.study.name,
        "output_dir": str(loaded.output_dir),
        "dry_run": dry_run,
        "every_row": [shown_setting(o) for o in loaded.common],
        "given": [shown_setting(o) for o in loaded.given],
        "rows": rows,
    }


def reproduce(
    study: Path = typer.Argument(
        ..., metavar="STUDY", help="Study YAML, e.g. recipes/mini/table2_samples.yaml."
    ),
    overrides: list[str] = typer.Argument(
        None,
        metavar="OVERRIDES",
        help="Recipe overrides (key.sub=value) for every row, applied after the study's and "
        "each row's own, e.g. train.max_steps=2 eval.limit=1; output_dir=DIR puts the rows "
        "and the table or figure in DIR instead of the study's output_dir.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (rows, reused or to run, overrides) and exit."
    ),
    only: list[str] = typer.Option(
        None,
        "--only",
        metavar="LABEL",
        help="Run only this row (label; repeat or comma-separate for several).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the outputs written and each row's status (with --dry-run: the plan) as "
        "JSON; the plan table and row lines go to stderr.",
    ),
) -> None:
    """Train and evaluate a study's rows, then write its table or figure.

    Finished rows are reused; the table or figure goes into the study's output_dir.

    To try a study small first, shrink every row and write it elsewhere (train.max_steps
    wins over a row's own; the untrained rows ignore it):

    \b
    dsharp reproduce recipes/mini/table1.yaml train.max_steps=2 eval.limit=1 output_dir=runs/try

    The overrides become part of each row's saved recipe: rerun into the same folder with a
    larger train.max_steps and the trained rows train on from their newest checkpoint, with
    other eval or sample settings the rows are evaluated again, and any other change is
    refused as a conflict.
    """
    from rich.console import Console

    from dsharp.launch import launcher_rank_zero
    from dsharp.recipe_errors import RecipeError
    from dsharp.study import StudyConflict, load_study, plan_study, run_study, select_rows

    console = Console(stderr=as_json)  # --json: stdout holds the JSON alone
    main = launcher_rank_zero()  # under a launcher, the first process alone prints
    try:
        loaded = load_study(study, overrides or ())
        plan_study(loaded)
        selected = select_rows(loaded, only)
    except RecipeError as exc:
        if debugging():
            raise
        if main:
            typer.echo(f"study error: {exc}", err=True)
        raise typer.Exit(RECIPE_ERROR_EXIT) from None
    if main and as_json and dry_run:
        typer.echo(json.dumps(_plan_json(loaded, selected, dry_run=True)))
    elif main:
        console.print(_plan_table(loaded, selected))
    conflicts = [p for p in loaded.rows if p.conflict]
    if conflicts:
        first = conflicts[0]
        if main:
            typer.echo(
                f"error: {study}: rows.{first.index} ({first.label}): {first.conflict}", err=True
            )
        raise typer.Exit(RECIPE_ERROR_EXIT)
    if dry_run:
        return
    ran = {plan.index: plan.status for plan in selected if plan.status != "reuse"}
    with user_errors():
        from dsharp.interrupts import TrainingInterrupted

        def echo(line: str) -> None:
            typer.echo(line, err=as_json)

        try:
            with own_warnings_as_lines():  # as `dsharp train`: one `warning:` line each
                outcome = run_study(loaded, only, progress=progress, echo=echo)
        except StudyConflict as exc:
            if main:
                typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(RECIPE_ERROR_EXIT) from None
        except TrainingInterrupted as stopped:
            if main:
                typer.echo(
                    f"stopped after step {stopped.step} of the row in {stopped.run_dir} "
                    "(checkpoint saved); run the same command again to resume it",
                    err=True,
                )
            raise typer.Exit(130) from None
    if outcome is None:  # another process of a launch: the first one evaluates and writes
        return
    if as_json:
        doc = _plan_json(loaded, selected, dry_run=False)
        for row, plan in zip(doc["rows"], loaded.rows, strict=True):
            row["ran"] = ran.get(plan.index)  # what this run did to it (None: nothing)
            row["shown"] = plan.label in outcome.shown
        doc["outputs"] = [str(p) for p in outcome.outputs]
        doc["missing"] = list(outcome.missing)
        typer.echo(json.dumps(doc))
        return
    for table in outcome.tables:
        console.print(table)
    typer.echo("wrote " + ", ".join(str(p) for p in outcome.outputs))

"""``dsharp recipes list`` and ``dsharp recipes validate``: thin wrappers over
:mod:`dsharp.recipe_listing` and :mod:`dsharp.recipe_io`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dsharp.commands.errors import RECIPE_ERROR_EXIT, debugging, user_errors
from dsharp.commands.help_format import PlainHelpCommand, PlainHelpGroup

app = typer.Typer(no_args_is_help=True, cls=PlainHelpGroup)


@app.command("list", cls=PlainHelpCommand)
def list_cmd(
    folder: Path | None = typer.Argument(
        None,
        metavar="FOLDER",
        help="Folder of recipes (default: ./recipes, else the ones shipped with dsharp).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List recipe files with their method, model and the command that runs them."""
    from dsharp.recipe_errors import RecipeError
    from dsharp.recipe_listing import find_recipes_dir, list_recipes

    shipped = folder is None and not Path("recipes").is_dir()
    try:
        folder = folder if folder is not None else find_recipes_dir()
        summaries = list_recipes(folder)
    except RecipeError as e:
        if debugging():
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(RECIPE_ERROR_EXIT) from None
    if as_json:
        rows = [
            {
                "file": str(s.file),
                "method": s.method,
                "sampler": s.sampler,
                "model": s.model,
                "command": _runnable(s.command, s.file),
                "error": s.error or None,
            }
            for s in summaries
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not summaries:
        typer.echo(f"no recipes (*.yaml) in {folder}")
        return
    # One line per recipe, columns padded to their longest cell, nothing wrapped or cut (as
    # pip list prints): a name is never broken inside a word and each row greps whole. The
    # command column holds the recipe's run command with RECIPE for its path.
    where = _relative(folder)
    header = ("recipe", "method", "model", "command")
    rows = [
        (
            _relative(s.file, folder),
            s.shown,
            s.model,
            _verb(s.command, s.file) if not s.error else f"error: {s.error}",
        )
        for s in summaries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=False)), cells[-1]])

    lines = [f"recipes in {where}", "", line(header)]
    lines.append(line((*("-" * w for w in widths), "-" * len(header[-1]))))
    lines += [line(row) for row in rows]
    example = next((s for s in summaries if not s.error and s.command), None)
    caption = f"run one as its command with RECIPE = {Path(where) / 'RECIPE'}"
    if example is not None:
        caption += f", e.g. {_runnable(example.command, example.file)}"
    if shipped:  # no ./recipes: their prompt files (recipes/prompts/...) are not here either
        caption += "\nthese ship with dsharp: `dsharp recipes copy` writes them to ./recipes"
    typer.echo("\n".join([*lines, "", caption]))  # one write: `| head` reads it whole


def _relative(path: Path, start: Path | None = None) -> str:
    """``path`` relative to ``start`` (default: the working directory) when it is below it."""
    try:
        return str(path.resolve().relative_to((start or Path.cwd()).resolve()))
    except ValueError:
        return str(path)


def _runnable(command: str, file: Path) -> str:
    """The recipe's own run command with its path as seen from the working directory.

    Why: a recipe's first-line comment names it relative to the checkout (``dsharp train
    recipes/quickstart.yaml``), which does not run from another folder.
    """
    return " ".join(_relative(file) if _names(word, file) else word for word in command.split())


def _verb(command: str, file: Path) -> str:
    """The recipe's run command with ``RECIPE`` for its path (``dsharp eval --recipe``; words
    after the path keep their place: ``dsharp train RECIPE data.dataset=...``)."""
    words = ["RECIPE" if _names(word, file) else word for word in command.split()]
    return " ".join(words[:-1] if words and words[-1] == "RECIPE" else words)


def _names(word: str, file: Path) -> bool:
    """Whether a word of the recipe's run command is the recipe's own path."""
    return Path(word).name == file.name


@app.command("copy", cls=PlainHelpCommand)
def copy_cmd(
    dest: Path = typer.Argument(
        Path("recipes"), metavar="FOLDER", help="Where to write them (default: ./recipes)."
    ),
) -> None:
    """Copy the recipes that ship with dsharp into FOLDER, to edit and run them.

    The README's commands (dsharp train recipes/quickstart.yaml) and the recipes' own prompt
    files (recipes/prompts/...) are read from the current folder: after `dsharp recipes copy`
    an installed dsharp runs them as written. A file already in FOLDER is never overwritten.
    """
    from dsharp.shipped_recipes import copy_recipes, reading_recipes_folder

    try:
        written = copy_recipes(dest)
    except (FileNotFoundError, FileExistsError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except OSError as e:
        typer.echo(f"error: {dest}: {e.strerror or e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{len(written)} files in {dest}; list them with: dsharp recipes list {dest}")
    relying = [] if _is_local_recipes(dest) else reading_recipes_folder(written)
    if relying:  # their recipes/prompts/... is read from ./recipes, which this copy is not
        typer.echo(
            f"note: {len(relying)} of them (e.g. {relying[0]}) read their prompts file from "
            f"recipes/prompts/ in the current folder, not from {dest}: run them from a folder "
            "whose recipes/ holds it (`dsharp recipes copy` with no FOLDER writes ./recipes)",
            err=True,
        )


def _is_local_recipes(dest: Path) -> bool:
    """Whether ``dest`` is ``./recipes``, where the recipes' own ``recipes/...`` paths point."""
    return dest.resolve() == (Path.cwd() / "recipes").resolve()


@app.command("validate", cls=PlainHelpCommand)
def validate_cmd(
    file: Path = typer.Argument(..., metavar="RECIPE", help="Recipe YAML file, or a study YAML."),
    overrides: list[str] | None = typer.Argument(
        None,
        metavar="OVERRIDES",
        help="Recipe overrides as key.sub=value (a study's: for every row), e.g. "
        "train.max_steps=2.",
    ),
) -> None:
    """Validate a recipe, or a study with every row's recipe; exit 2 if one is invalid.

    The error is one line naming the file and the reason.
    """
    from dsharp.recipe_errors import RecipeError
    from dsharp.recipe_io import load_recipe
    from dsharp.study import is_study_file, load_study

    with user_errors():  # a plugin's fault in a check: one line, exit 1
        try:
            if is_study_file(file):  # a dsharp reproduce study: every row's recipe
                loaded = load_study(file, overrides or ())
                kind = f"{loaded.study.kind} study, {len(loaded.rows)} rows"
                typer.echo(f"ok: {file} ({kind})")
                return
            recipe = load_recipe(file, overrides or ())
            from dsharp.posttrain import wants_report
            from dsharp.preflight import check_before_loading

            # What train would refuse before loading a model, so "ok" means train gets that far.
            check_before_loading(recipe, source=str(file), evaluation=wants_report(recipe))
        except RecipeError as e:
            if debugging():
                raise
            typer.echo(str(e), err=True)
            raise typer.Exit(RECIPE_ERROR_EXIT) from None
    from dsharp.recipe_listing import saved_row_sampler, what_it_runs

    method = recipe.method.name if "method" in recipe.model_fields_set else None
    shown = what_it_runs(method, recipe.sample.method)
    scored = saved_row_sampler(file)
    if scored is not None:  # a study's untrained row: its method never ran
        shown = f"{scored} (sampler)"
    typer.echo(f"ok: {file} ({shown}, {recipe.model.pretrained})")
    from dsharp.preflight import recipe_notes

    for note in recipe_notes(recipe):
        typer.echo(f"note: {note}", err=True)
    _note_what_this_machine_refuses(recipe)


def _note_what_this_machine_refuses(recipe: Any) -> None:
    """A valid recipe may still need another machine (fp16 without CUDA, an 8-bit optimizer
    without bitsandbytes) or fixed input files (a data row naming a missing image): say
    which, with the field, ``file:line`` and reason train gives, since ``train`` refuses it
    here before loading."""
    from dsharp.preflight import check_run_folder, check_runtime
    from dsharp.recipe_errors import RecipeError

    try:
        check_runtime(recipe)
    except ValueError as err:
        field = err.field if isinstance(err, RecipeError) else ""
        data = field.startswith("data.") or field == "method.options.pairs_file"  # an input's
        what = "its data" if data else "it on this machine"
        typer.echo(f"note: train would refuse {what}: {err}", err=True)
    try:  # the run folder as it is now: another run's checkpoints, a resume it cannot make
        check_run_folder(recipe)
    except RecipeError as err:
        typer.echo(f"note: train would refuse its run folder now: {err}", err=True)

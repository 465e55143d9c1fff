"""`dsharp runs [FOLDER]`: the run folders under FOLDER at a glance."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from dsharp.commands.errors import user_errors
from dsharp.runs import RECIPE_MISSING, RunSummary

#: Where ``dsharp train`` puts runs unless a recipe says otherwise (``output_dir: runs/NAME``).
DEFAULT_FOLDER = Path("runs")
NO_RUNS_YET = (
    "runs: no run folders yet (the folder does not exist); `dsharp train RECIPE` writes "
    "runs/NAME, e.g. dsharp train recipes/quickstart.yaml"
)


def runs(
    folder: Path = typer.Argument(
        DEFAULT_FOLDER, metavar="FOLDER", help="Folder whose run folders to list."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List run folders, newest first, with their method, steps and newest score.

    Each row also says the model, whether the run finished or stopped, and which
    evaluation file its score comes from: the newest by the bench's own rewards, where
    there is one (an `eval --bench B --reward R` file scores other rewards).
    """
    from dsharp.runs import find_runs, is_run_folder, study_folders

    if folder == DEFAULT_FOLDER and not folder.exists():  # a first try: nothing trained yet
        typer.echo("[]" if as_json else NO_RUNS_YET)
        return
    with user_errors():
        found = find_runs(folder)
        studies = [] if is_run_folder(folder) else study_folders(folder)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in found]))
    elif not found:
        typer.echo(f"{folder}: no run folders (none holds a recipe.yaml or an evaluation)")
    else:
        _print_table(folder, found)
    for study in studies:  # their rows are a level down: said where, not listed here
        hint = f"{study}: a study's rows; list them with `dsharp runs {shlex.quote(str(study))}`"
        typer.echo(hint, err=as_json)  # --json: stdout stays JSON


def _print_table(folder: Path, found: list[RunSummary]) -> None:
    """The runs as a table under a title naming what they share, then how to continue the
    stopped ones."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    cells = {
        "run": [r.name for r in found],
        "method": [r.method or "-" for r in found],
        "model": [_short_model(r.model) for r in found],
        "steps": [_steps(r) for r in found],
        "score": ["-" if r.score is None else f"{r.score:.4f}" for r in found],
        "from": [_evaluation(r.score_from, r.score_step, r.step) for r in found],
        "updated": [r.updated for r in found],
    }
    # A method or model that every run shares is said once, in the title, so that the
    # other columns fit an 80-column terminal.
    shared = {name: cells[name][0] for name in ("method", "model") if len(set(cells[name])) == 1}
    title = f"runs in {folder}"
    if shared:
        title += " (" + ", ".join(f"{k} {v}" for k, v in shared.items()) + ")"
    console = Console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    columns = [name for name in cells if name not in shared]
    folding = _folding_widths(cells, columns, console.width)
    for name in columns:
        # Numbers and times stay whole, at their own width; names fold where that costs
        # the table fewest lines.
        widest = max(map(len, cells[name]))
        table.add_column(
            name,
            justify="right" if name == "score" else "left",
            overflow="fold",
            no_wrap=name in _WHOLE,
            min_width=widest if name in _WHOLE else None,
            width=folding.get(name),
        )
    for i in range(len(found)):
        table.add_row(*(cells[name][i] for name in columns))
    console.print(title, highlight=False, markup=False)  # above the table: not cut to its width
    console.print(table)
    stopped = [r for r in found if r.status == "stopped"]
    if stopped:
        which = (
            "1 stopped run: continue it"
            if len(stopped) == 1
            else (f"{len(stopped)} stopped runs: continue one")
        )
        typer.echo(f"{which} with `dsharp train RECIPE output_dir=RUN train.resume=latest`")
    orphans = [r for r in found if r.status == RECIPE_MISSING]
    if orphans:
        which, it = (
            ("1 run has", "it") if len(orphans) == 1 else (f"{len(orphans)} runs have", "them")
        )
        typer.echo(
            f"{which} checkpoints but no recipe.yaml: train will not resume {it} without the "
            "recipe to check the resume against (restore recipe.yaml, or branch from a "
            "checkpoint into another output_dir with train.resume=CHECKPOINT)"
        )


_WHOLE = ("score", "updated")  # columns never folded (steps folds at its status's space)
_NARROWEST = 5  # a folding column is not made narrower than this ("50/50")


def _folding_widths(cells: dict[str, list[str]], columns: list[str], width: int) -> dict[str, int]:
    """Widths for the columns that fold (run, model, evaluation) in a table ``width``
    characters wide, after the whole ones: narrowed one character at a time where that
    adds the fewest lines to the table (the widest column first among equals), so that a
    long evaluation name folds before the model that every row shows."""
    room = width + 1 - 3 * len(columns)  # edges, padding inside the table, dividers
    room -= sum(max(len(h), *map(len, cells[h])) for h in columns if h in _WHOLE)
    texts = {h: [h, *cells[h]] for h in columns if h not in _WHOLE}
    widths = {h: max(map(len, texts[h])) for h in texts}

    def lines(h: str, w: int) -> int:
        return sum(-(-len(text) // w) for text in texts[h])

    while sum(widths.values()) > room:
        narrowable = [h for h in widths if widths[h] > _NARROWEST]
        if not narrowable:
            break  # rich's own last resort
        cost = {h: lines(h, widths[h] - 1) - lines(h, widths[h]) for h in narrowable}
        widths[min(narrowable, key=lambda h: (cost[h], -widths[h]))] -= 1
    return widths


def _short_model(model: str | None) -> str:
    """A model as the table shows it: a long folder path by its last part (``…/tiny-sd``),
    so that the other columns keep their width; ``--json`` has the whole path."""
    if not model:
        return "-"
    if len(model) <= 16 or "/" not in model.rstrip("/") or not model.startswith(("/", ".", "~")):
        return model
    return "…/" + Path(model).name


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
    """ "50/50", "10/20 stopped", "10/20 running", "-/20 not started" or "eval only"."""
    if run.status == "evaluation only":
        return "eval only"
    done = "-" if run.step is None else str(run.step)
    total = "?" if run.max_steps is None else str(run.max_steps)
    return f"{done}/{total}" + ("" if run.status == "finished" else f" {run.status}")

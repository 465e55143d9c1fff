"""`dsharp compare RUN_OR_JSON ...`: one table of several evaluations, optionally beside the
paper's numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dsharp.commands.errors import require_output_paths, settings_errors, user_errors


def results_for_paper(
    source: Path, table: str, notes: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """A run folder's evaluations merged into one result (its eval*.json), or one JSON.

    A folder's evaluations on a ``--prompts`` file, or of a bench's prompts by other rewards
    than its own (``--bench shapes --reward clip``), are left out where it has others: the
    paper's columns are benchmarks, and a one-prompt check must not stand for a bench's
    score, nor CLIP on the shapes prompts for CLIP's. Of the rest a later one wins a clash
    (a run evaluated again). ``notes`` gets a line for each folder where an evaluation was
    left out or a metric clashed, naming the files. For Tables 2 and 3 an RLHF sharpening
    run's recipe says which paper row it reproduces (method.n / .m), and a run of another
    method is marked with its method (no paper row); a folder with no training (a study's
    base row) is marked ``untrained``.
    """
    from dsharp.bench import merge_results
    from dsharp.report import (
        eval_files,
        load_result,
        no_evaluation_error,
        read_evaluation,
        scored_by_other_rewards,
    )

    if not source.is_dir():
        return load_result(source)
    found = eval_files(source)
    if not found:
        raise no_evaluation_error(source)
    evaluations = [(path, read_evaluation(path)) for path in found]
    bench_own = [(p, r) for p, r in evaluations if not scored_by_other_rewards(r)]
    used = [(p, r) for p, r in bench_own if not on_prompt_file(p, r)] or evaluations
    merged = merge_results([result for _, result in used])
    if notes is not None:
        notes += _merge_notes(source, evaluations, used)
    recipe_path = source / "recipe.yaml"
    trained = (source / "metrics.jsonl").exists() or (source / "checkpoints").is_dir()
    if not trained:
        merged["untrained"] = True
    elif table in ("table2", "table3") and recipe_path.exists():
        import yaml

        from dsharp.bench.paper import RECIPE_METHOD, RECIPE_ROW, TABLE_METHOD

        method = (yaml.safe_load(recipe_path.read_text()) or {}).get("method", {})
        name = method.get("name", "rlhf_sharpening")  # the schema's default method
        implied = method.get("n" if table == "table2" else "m")
        if merged.get("paper_row") is not None:
            pass  # named by its evaluation
        elif name != TABLE_METHOD:
            merged[RECIPE_METHOD] = name  # its n or m is not the tables' (DDPO's n: samples)
        elif implied is not None:
            merged[RECIPE_ROW] = implied  # not named by anyone: may be no row of the table
    return source.name, merged


def on_prompt_file(path: Path, result: dict[str, Any]) -> bool:
    """Whether an evaluation scored a ``--prompts`` file rather than its bench's (or its
    recipe's) prompts: as it records (``prompts_file``), else, in a file written before it
    did, by the name `dsharp eval` gave it (``eval-BENCH-FILESTEM.json``)."""
    if "prompts_file" in result:
        return result["prompts_file"] is not None
    return path.name.startswith(f"eval-{result.get('bench') or 'rewards'}-")


def _merge_notes(
    source: Path,
    evaluations: list[tuple[Path, dict[str, Any]]],
    used: list[tuple[Path, dict[str, Any]]],
) -> list[str]:
    """What merging a folder's evaluations left out, and which file gave a metric that
    several hold."""
    from dsharp.report import scored_by_other_rewards

    notes = []
    used_paths = [p for p, _ in used]
    left_out = [(p, r) for p, r in evaluations if p not in used_paths]
    by_others = [p.name for p, r in left_out if scored_by_other_rewards(r)]
    on_files = [p.name for p, r in left_out if p.name not in by_others]
    if on_files:
        notes.append(
            f"{source}: left out {', '.join(on_files)}: evaluated on a --prompts file, not "
            "the bench's prompts (give the file to compare it)"
        )
    if by_others:
        notes.append(
            f"{source}: left out {', '.join(by_others)}: scored by other rewards than its "
            "bench's own (give the file to compare it)"
        )
    if not left_out and any(on_prompt_file(p, r) for p, r in used):
        names = ", ".join(p.name for p, _ in used)
        notes.append(f"{source}: its evaluations ({names}) are all on --prompts files")
    clashes = []
    # eval_files lists the oldest first, and merge_results lets a later one win a clash
    for metric in dict.fromkeys(m for _, r in used for m in r.get("metrics") or {}):
        holders = [p.name for p, r in used if metric in (r.get("metrics") or {})]
        if len(holders) > 1:
            others = ", ".join(holders[:-1])
            clashes.append(f"{metric} from {holders[-1]}, the newest (also in {others})")
    if clashes:
        notes.append(f"{source}: {'; '.join(clashes)}")
    return notes


def compare(
    sources: list[Path] = typer.Argument(
        ..., metavar="RUN_OR_JSON", help="Run folders (their eval*.json) or eval JSON files."
    ),
    out: Path = typer.Option(
        Path("."), "--out", help="Folder for compare.md, compare.csv and compare.png."
    ),
    against: str = typer.Option(
        None,
        "--against",
        metavar="paper",
        help="Put the paper's numbers beside ours, with deltas (see --table).",
    ),
    table: str = typer.Option(
        "table1",
        "--table",
        metavar="TABLE",
        help="With --against paper: table1, table2 (n) or table3 (m).",
    ),
    paired: bool = typer.Option(
        False,
        "--paired",
        help="Compare each source with the first image by image (same prompts and seeds): "
        "mean difference, its 95% interval over prompts, share of images better / worse, "
        "and the difference per category.",
    ),
    plot: bool = typer.Option(
        True,
        "--plot/--no-plot",
        help="Also write compare.png: the table as grouped bars (with --paired: the deltas, "
        "overall with its 95% interval, and per category). Not with --against.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the table (columns, rows), the notes and the files written as JSON "
        "instead of the table.",
    ),
) -> None:
    """Print one table comparing evaluations, and write it as markdown, CSV and a plot."""
    from rich.console import Console

    from dsharp.io import atomic_write_text
    from dsharp.report import (
        build_table,
        distinct_labels,
        load_result,
        to_csv,
        to_json_table,
        to_markdown,
        to_rich,
    )

    notes: list[str] = []  # on stderr as they come; with --json in its result too

    def note(text: str, prefix: str = "note: ") -> None:
        notes.append(text)
        typer.echo(f"{prefix}{text}", err=True)

    with user_errors():
        _check_flags(against, table, paired)
        require_output_paths({"--out": out}, {})
        if against is None:
            for line in _which_evaluation(sources):
                note(line, prefix="")
        if paired:
            from dsharp.paired import check_same_rewards, paired_table

            loaded = [load_result(src) for src in sources]
            with settings_errors():  # exit 2: --paired cannot apply to these files
                check_same_rewards([(str(s), r) for s, (_, r) in zip(sources, loaded, strict=True)])
            named_list = distinct_labels(loaded, sources)
            columns, rows = paired_table(named_list)
            rich_table = to_rich(columns, rows, title="dsharp compare --paired")
        elif against == "paper":
            from dsharp.bench import compare_with_paper
            from dsharp.bench.paper import default_reference_notes

            merge_notes: list[str] = []
            found = [results_for_paper(Path(src), table, merge_notes) for src in sources]
            named = dict(distinct_labels(found, sources))
            columns, rows = compare_with_paper(named, table)
            for text in [*merge_notes, *default_reference_notes(named, table)]:
                note(text)
            title = f"dsharp compare --against paper ({table})"
            rich_table = to_rich(columns, rows, title, unit="column")  # paper, ours, delta
        else:
            named_list = distinct_labels([load_result(src) for src in sources], sources)
            columns, rows = build_table(named_list)
            rich_table = to_rich(columns, rows, title="dsharp compare")
        if against is None:
            from dsharp.comparability import comparability_notes

            for text in comparability_notes(named_list):
                note(text)
        written = [Path(out) / "compare.md", Path(out) / "compare.csv"]
        atomic_write_text(written[0], to_markdown(columns, rows))
        atomic_write_text(written[1], to_csv(columns, rows))
        if plot and against is None:
            from dsharp.compare_plot import COMPARE_PNG, plot_compare, plot_paired

            draw = plot_paired if paired else plot_compare
            if draw(columns, rows, Path(out) / COMPARE_PNG):
                written.append(Path(out) / COMPARE_PNG)
    if as_json:
        files = [str(p) for p in written]
        typer.echo(json.dumps({**to_json_table(columns, rows), "notes": notes, "files": files}))
        return
    Console().print(rich_table)
    typer.echo(f"wrote {', '.join(str(p) for p in written[:-1])} and {written[-1]}")


def _check_flags(against: str | None, table: str, paired: bool) -> None:
    """Refuse a flag value compare does not know before reading any source: a bad setting,
    exit 2 as a bad recipe value (``RecipeError``)."""
    from dsharp.bench.paper import TABLES
    from dsharp.recipe_errors import RecipeError

    if against not in (None, "paper"):
        raise RecipeError(f"--against: unknown '{against}' (expected: paper)")
    if table not in TABLES:
        raise RecipeError(f"--table: unknown '{table}' (available: {', '.join(TABLES)})")
    if paired and against is not None:
        raise RecipeError("--paired and --against: choose one")


def _which_evaluation(sources: list[Path]) -> list[str]:
    """A run folder stands for its newest evaluation (one of its bench's own rewards before
    one of other rewards); where it holds several (another prompt file, other rewards, the
    report's base and fine-tuned), a line saying which one the row shows."""
    from dsharp.report import eval_files, run_evaluation

    lines = []
    for source in sources:
        used = run_evaluation(source) if Path(source).is_dir() else None
        also = eval_files(source, include_base=True) if used is not None else []
        if len(also) > 1:
            others = ", ".join(p.name for p in also if p != used)
            newest = used == eval_files(source)[-1]
            which = "its newest evaluation" + ("" if newest else " by its bench's own rewards")
            lines.append(
                f"{source}: using {used.name}, {which} (also there: {others}; give a file to "
                "choose)"
            )
    return lines

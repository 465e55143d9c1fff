"""`dsharp compare RUN_OR_JSON ...`: one table of several evaluations, optionally beside the
paper's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dsharp.commands.errors import require_output_paths, settings_errors, user_errors
from dsharp.paper_results import results_for_paper


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
        _check_flags(against, table, paired, len(sources))
        require_output_paths({"--out": out}, {})
        if against is None:
            for line in _which_evaluation(sources):
                note(line, prefix="")
        if paired:
            from dsharp.paired import check_same_rewards, paired_subset_notes, paired_table

            loaded = [load_result(src) for src in sources]
            with settings_errors():  # exit 2: --paired cannot apply to these files
                check_same_rewards([(str(s), r) for s, (_, r) in zip(sources, loaded, strict=True)])
            named_list = distinct_labels(loaded, sources)
            columns, rows = paired_table(named_list)
            paired_notes = paired_subset_notes(named_list)
            rich_table = to_rich(columns, rows, title="dsharp compare --paired")
        elif against == "paper":
            from dsharp.bench import compare_with_paper
            from dsharp.bench.paper import as_printed_notes, default_reference_notes, paper_table
            from dsharp.bench.t2i_protocol import protocol_notes

            merge_notes: list[str] = []
            found = [results_for_paper(Path(src), table, merge_notes) for src in sources]
            named = dict(distinct_labels(found, sources))
            columns, rows = compare_with_paper(named, table)
            paper_notes = [*default_reference_notes(named, table), *as_printed_notes(table, rows)]
            paper_notes += protocol_notes(named, paper_table(table)[0])
            for text in [*merge_notes, *paper_notes]:
                note(text)
            title = f"dsharp compare --against paper ({table})"
            rich_table = to_rich(columns, rows, title, unit="column")  # paper, ours, delta
        else:
            named_list = distinct_labels([load_result(src) for src in sources], sources)
            columns, rows = build_table(named_list)
            rich_table = to_rich(columns, rows, title="dsharp compare")
        if against is None:
            from dsharp.comparability import comparability_notes

            for text in comparability_notes(named_list, paired=paired):
                note(text)
        if paired:
            for text in paired_notes:
                note(text)
        from dsharp.compare_plot import COMPARE_PNG
        from dsharp.file_sets import replaced_together

        written = [Path(out) / "compare.md", Path(out) / "compare.csv"]
        png = Path(out) / COMPARE_PNG
        markdown = to_markdown(columns, rows)
        if against == "paper":  # the file alone must say which rows are the paper's
            from dsharp.bench.paper import paper_legend

            markdown = f"{paper_legend(table)}\n\n{markdown}"
        if paired:  # the file alone must say what delta and ci95 are
            from dsharp.paired import PAIRED_LEGEND

            markdown = f"{PAIRED_LEGEND}\n\n{markdown}"
        if notes:  # the file alone must carry what makes its rows hard to compare
            markdown += "\nNotes:\n\n" + "".join(f"- {text}\n" for text in notes)
        # one set: an old compare.png (or none drawn now) beside a new table would pass for
        # this comparison's; compare.md, which holds the notes, is replaced last
        drawn = plot and against is None
        members = [png] if drawn or png.exists() else []  # an old one not drawn: removed
        with replaced_together(*members, written[1], written[0]) as staged:
            atomic_write_text(staged(written[0]), markdown)
            atomic_write_text(staged(written[1]), to_csv(columns, rows))
            if drawn:
                from dsharp.compare_plot import plot_compare, plot_paired, scored_by

                draw = plot_paired if paired else plot_compare
                if draw(columns, rows, staged(png), scored_by(named_list)):
                    written.append(png)
    if as_json:
        files = [str(p) for p in written]
        typer.echo(json.dumps({**to_json_table(columns, rows), "notes": notes, "files": files}))
        return
    Console().print(rich_table)
    typer.echo(f"wrote {', '.join(str(p) for p in written[:-1])} and {written[-1]}")


def _check_flags(against: str | None, table: str, paired: bool, sources: int) -> None:
    """Refuse a flag value compare does not know, or ``--paired`` with one source (a missing
    input), before reading any source: a bad setting, exit 2 as a bad recipe value
    (``RecipeError``)."""
    from dsharp.bench.paper import TABLES
    from dsharp.recipe_errors import RecipeError

    if against not in (None, "paper"):
        raise RecipeError(f"--against: unknown '{against}' (expected: paper)")
    if table not in TABLES:
        raise RecipeError(f"--table: unknown '{table}' (available: {', '.join(TABLES)})")
    if paired and against is not None:
        raise RecipeError("--paired and --against: choose one")
    if paired and sources < 2:
        raise RecipeError("--paired: give a baseline and at least one evaluation to pair with it")


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

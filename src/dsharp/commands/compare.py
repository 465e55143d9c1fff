"""`dsharp compare RUN_OR_JSON ...`: one table of several evaluations."""

from __future__ import annotations

from pathlib import Path

import typer

from dsharp.commands.errors import user_errors


def compare(
    sources: list[Path] = typer.Argument(
        ..., help="Run folders (their eval*.json) or eval JSON files."
    ),
    out: Path = typer.Option(Path("."), "--out", help="Folder for compare.md and compare.csv."),
    against: str = typer.Option(
        None, "--against", help="Put published numbers beside ours (later: 'paper')."
    ),
) -> None:
    """Print one table comparing evaluations, and write it as markdown and CSV."""
    from rich.console import Console

    from dsharp.io import atomic_write_text
    from dsharp.report import build_table, load_result, to_csv, to_markdown, to_rich

    with user_errors():
        if against is not None:
            raise NotImplementedError("--against paper is not implemented yet")
        named = [load_result(src) for src in sources]
        columns, rows = build_table(named)
        atomic_write_text(Path(out) / "compare.md", to_markdown(columns, rows))
        atomic_write_text(Path(out) / "compare.csv", to_csv(columns, rows))
    Console().print(to_rich(columns, rows, title="dsharp compare"))
    typer.echo(f"wrote {Path(out) / 'compare.md'} and {Path(out) / 'compare.csv'}")

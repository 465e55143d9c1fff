"""Running a dsharp command in-process and reading its one error line, for tests of the
command line's refusals and failures."""

from __future__ import annotations

from typer.testing import CliRunner

from dsharp.cli import app


def invoke(args: list[object]):
    """The command's result; an exception other than its exit is raised, not hidden."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error_line(text: str) -> str:
    """The one ``error:`` line of stderr (progress bars may come before it)."""
    assert "Traceback" not in text
    lines = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]

"""A missing or doubled input is a usage error, exit 2 as the parser's own refusals, in
every command (``commands/errors.usage_error``); a file that is not there or cannot be read
exits 1."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dsharp.cli import app


def test_compare_paired_with_one_source_is_a_usage_error_before_any_file_is_read(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "eval.json"  # not read: the count alone is refused
    result = CliRunner().invoke(app, ["compare", "--paired", str(missing)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: --paired: give a baseline and at least one evaluation to pair with it"
    )
    unpaired = CliRunner().invoke(app, ["compare", str(missing)])  # a file not there: 1
    assert unpaired.exit_code == 1 and "no such file" in unpaired.stderr, unpaired.output

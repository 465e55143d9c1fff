"""Terminal tables of `dsharp compare`, `eval` and studies: many runs never fold a number."""

from __future__ import annotations

import io

from rich.console import Console

from dsharp.report import _column_chunks, to_rich


def _render(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _table(runs: int) -> tuple[list[str], list[list[object]]]:
    columns = ["run", "overall", "delta:single", "note"]
    rows = [[f"run-{i:02d}", 0.5 + i / 1000, -0.25 + i / 100, "x"] for i in range(runs)]
    return columns, rows


def test_many_runs_are_cut_into_tables_that_fit_with_every_number_whole():
    columns, rows = _table(12)
    text = _render(to_rich(columns, rows, title="cmp"), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for row in rows:  # each label and value once, on one line
        for value in (row[0], f"{row[1]:.4f}", f"{row[2]:.4f}"):
            assert sum(line.count(value) for line in text.splitlines()) == 1, value
    titles = [line.strip() for line in text.splitlines() if line.strip().startswith("cmp")]
    assert titles == ["cmp (runs 1-6 of 12)", "cmp (runs 7-12 of 12)"]


def test_parts_name_what_a_column_is():
    columns, rows = _table(12)  # e.g. paper, ours and delta of four runs
    text = _render(to_rich(columns, rows, title="cmp", unit="column"), 80)
    titles = [line.strip() for line in text.splitlines() if line.strip().startswith("cmp")]
    assert titles == ["cmp (columns 1-6 of 12)", "cmp (columns 7-12 of 12)"]


def test_a_wide_terminal_gets_one_table():
    columns, rows = _table(12)
    text = _render(to_rich(columns, rows, title="cmp"), 200)
    assert [line.strip() for line in text.splitlines() if "cmp" in line] == ["cmp"]
    assert "run-00" in text and "run-11" in text


def test_chunks_are_as_few_as_greedy_and_evened_out():
    # first column 10 wide: a table holds 10 + 4 + 3 per column + the columns' text
    assert _column_chunks(10, [7] * 5, 80) == [(0, 5)]
    assert _column_chunks(10, [7] * 7, 60) == [(0, 4), (4, 7)]  # at most 4 fit in one
    assert _column_chunks(10, [7] * 9, 60) == [(0, 3), (3, 6), (6, 9)]  # not 4 + 4 + 1
    assert _column_chunks(10, [100, 7], 60) == [(0, 1), (1, 2)]  # too wide alone: by itself
    assert _column_chunks(10, [], 60) == [(0, 0)]

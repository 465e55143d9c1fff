"""Every number dsharp shows as the paper's, cell by cell, against the project's reference
copy of the paper's tables (../shared/reference/paper_tables.yaml): a typo in the shipped
copy, a dropped row or column, or a display that rounds or rescales a paper cell fails here."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
import yaml

from dsharp.bench.paper import TABLES, compare_with_paper, paper_source, paper_table
from dsharp.report import to_csv, to_markdown

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
REFERENCE_FILE = REFERENCE / "paper_tables.yaml"


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE_FILE.is_file():
        pytest.skip(f"no reference copy of the paper's tables at {REFERENCE_FILE}")
    return yaml.safe_load(REFERENCE_FILE.read_text(encoding="utf-8"))


def _cells(reference: dict):
    """(table, row name, column, the paper's value) for every cell of Tables 1-3."""
    for table in TABLES:
        spec = reference[table]
        for row, values in spec["rows"].items():
            assert len(values) == len(spec["columns"]), (table, row)
            for column, value in zip(spec["columns"], values, strict=True):
                yield table, row, column, value


def test_the_source_is_the_papers_version(reference: dict):
    assert paper_source() == reference["source"]
    assert "2502.12146v1" in paper_source()


@pytest.mark.parametrize("table", TABLES)
def test_paper_table_holds_every_row_and_column_as_printed(reference: dict, table: str):
    columns, rows = paper_table(table)
    spec = reference[table]
    assert columns[1:] == spec["columns"]
    assert [r[0] for r in rows] == [str(k) for k in spec["rows"]]
    for row in rows:
        key = next(k for k in spec["rows"] if str(k) == row[0])
        for column, ours, theirs in zip(spec["columns"], row[1:], spec["rows"][key], strict=True):
            assert ours == theirs, f"{table} {row[0]} {column}: {ours} != paper {theirs}"


@pytest.mark.parametrize("table", TABLES)
def test_the_side_by_side_paper_rows_show_each_cell_unchanged(reference: dict, table: str):
    """``dsharp compare --against paper`` and a study's ``table-paper.csv`` / ``table.md``:
    the ``paper:`` row of each of the table's rows, in the returned table, the CSV and the
    markdown (4 places: enough for every printed cell, so rounding loses nothing)."""
    spec = reference[table]
    results = {f"r{i}": {"metrics": {}, "paper_row": k} for i, k in enumerate(spec["rows"])}
    columns, rows = compare_with_paper(results, table)
    assert columns[1:] == spec["columns"]
    paper_rows = {r[0]: r[1:] for r in rows if str(r[0]).startswith("paper:")}
    assert list(paper_rows) == [f"paper:{k}" for k in spec["rows"]]
    csv_rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(to_csv(columns, rows)))}
    md_rows = {}
    for line in to_markdown(columns, rows).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        md_rows[cells[0]] = cells[1:]
    for key, values in spec["rows"].items():
        label = f"paper:{key}"
        for i, (column, value) in enumerate(zip(spec["columns"], values, strict=True)):
            where = f"{table} {key} {column}"
            assert paper_rows[label][i] == value, where
            assert float(csv_rows[label][i]) == value, where
            assert float(md_rows[label][i]) == value, f"{where}: markdown {md_rows[label][i]}"


def test_every_cell_is_on_the_scale_dsharps_metrics_are_put_on(reference: dict):
    """The columns ours are compared with: CLIP score a plain cosine (not x100), T2I-CompBench
    and the MLLM grade fractions (the MLLM column is overall / 10), aesthetic 1-10,
    ImageReward normalised (about -2..2): a cell on another scale is a typo of the copy."""
    ranges = {
        "clip_score": (0.0, 1.0),
        "aesthetic": (1.0, 10.0),
        "image_reward": (-2.5, 2.5),
        "mllm": (0.0, 1.0),
    }
    count = 0
    for table in TABLES:  # the shipped copy, as dsharp shows it
        columns, rows = paper_table(table)
        for row in rows:
            for column, value in zip(columns[1:], row[1:], strict=True):
                low, high = ranges.get(column, (0.0, 1.0))  # the t2i_* columns
                assert isinstance(value, float) and math.isfinite(value), (table, row[0], column)
                where = f"{table} {row[0]} {column}: {value}"
                assert low <= value <= high, f"{where} not in [{low}, {high}]"
                count += 1
    assert count == sum(1 for _ in _cells(reference)) == 11 * 10 + 5 * 3 + 5 * 3

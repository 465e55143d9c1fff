"""A side-by-side table read alone (compare.md, a study's table.md) says which of its rows are
the paper's printed numbers, from which paper and model, and which were measured here."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dsharp.bench.paper import AS_PRINTED, paper_legend
from dsharp.cli import app
from dsharp.study import load_study
from dsharp.study_outputs import write_outputs
from study_files import write_study
from study_rows import finish_rows

ROOT = Path(__file__).resolve().parent.parent


def test_the_legend_names_the_paper_its_model_and_what_is_ours():
    line = paper_legend("table2")
    assert "arXiv 2502.12146v1" in line and "SDXL" in line
    assert "Performance of Different Number of Samples in Training (n)" in line
    assert "not measured here" in line and "ours: measured here" in line
    assert "delta: ours - paper" in line


def test_compare_md_against_the_paper_opens_with_the_legend(tmp_path: Path):
    result_file = tmp_path / "rlhf_sharpening.json"
    result_file.write_text(json.dumps({"metrics": {"clip": {"mean": 0.3}}}))
    out = tmp_path / "out"
    args = ["compare", str(result_file), "--against", "paper", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    md = (out / "compare.md").read_text()
    assert md.splitlines()[0] == paper_legend("table1")
    assert "| paper:rlhf_sharpening | 0.3380 |" in md
    # the plain comparison has no paper rows and so no legend
    plain = CliRunner().invoke(app, ["compare", str(result_file), "--out", str(out), "--no-plot"])
    assert plain.exit_code == 0, plain.output
    assert "paper:" not in (out / "compare.md").read_text()


def test_a_studys_table_md_labels_its_paper_section(tmp_path: Path):
    path = write_study(tmp_path, [{"label": "m=2", "overrides": ["method.m=2"]}], name="table3")
    loaded = load_study(path)
    finish_rows(
        loaded,
        metrics=lambda i, plan: [{"step": 2, "loss": 0.1}],
        result=lambda i, plan: {"overall": 0.3, "metrics": {"clip": {"mean": 0.3}}},
    )
    write_outputs(loaded, echo=lambda _: None)
    lines = (tmp_path / "out" / "table.md").read_text().splitlines()
    heading = lines.index("## Beside the paper (table3, arXiv 2502.12146v1, Tables 1-3)")
    assert lines[heading + 2] == paper_legend("table3")
    assert lines[heading + 4].startswith("| row | clip_score | image_reward | mllm |")


def test_the_cells_kept_as_printed_are_those_the_reference_marks():
    """The reference file marks such a cell with a comment (``# mllm 0.300 as printed``)."""
    import re

    reference = ROOT.parent / "shared" / "reference" / "paper_tables.yaml"
    if not reference.is_file():
        import pytest

        pytest.skip(f"no reference copy of the paper's tables at {reference}")
    marked: dict[str, list[str]] = {}
    for line in reference.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\s+(\w+):.*#\s*(\w+) [\d.]+ as printed", line)
        if found:
            marked.setdefault(found.group(1), []).append(found.group(2))
    assert {row: tuple(cols) for row, cols in marked.items()} == AS_PRINTED["table1"]


def test_compare_says_a_paper_cell_is_kept_as_printed(tmp_path: Path):
    for label in ("demon", "ddpo"):
        result_file = tmp_path / f"{label}.json"
        result_file.write_text(json.dumps({"metrics": {"mllm": {"mean": 0.8}}}))
    out = tmp_path / "out"
    args = ["compare", str(tmp_path / "demon.json"), "--against", "paper", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = (
        "paper:demon mllm 0.3 is as printed in arXiv 2502.12146v1, Tables 1-3, out of line "
        "with the column's other rows (0.78-0.921)"
    )
    assert f"- {expected}\n" in (out / "compare.md").read_text()
    assert expected in " ".join(result.stderr.split())
    args[1] = str(tmp_path / "ddpo.json")  # a row with no such cell: no note
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "is as printed" not in (out / "compare.md").read_text()


def test_a_studys_table_md_says_a_paper_cell_is_kept_as_printed(tmp_path: Path):
    path = write_study(tmp_path, [{"label": "demon", "train": False}], name="table1")
    loaded = load_study(path)
    finish_rows(loaded, result=lambda i, plan: {"overall": 0.8, "metrics": {"mllm": {"mean": 0.8}}})
    write_outputs(loaded, echo=lambda _: None)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "\nNote: paper:demon mllm 0.3 is as printed in arXiv 2502.12146v1" in md


def test_a_study_whose_rows_have_no_paper_metric_writes_no_paper_section(tmp_path: Path):
    """dsharp-mini rows scored by the shapes bench only: the paper's SDXL rows beside a
    shapes column and deltas all '-' compare nothing (the mini studies say so). Our metrics
    as extra columns used to count as comparable, so the section was written anyway."""
    path = write_study(tmp_path, [{"label": "n=2", "overrides": ["method.n=2"]}], name="table2")
    loaded = load_study(path)
    stale = tmp_path / "out" / "table-paper.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("row,clip_score\n")  # an earlier run's comparison
    finish_rows(
        loaded,
        metrics=lambda i, plan: [{"step": 2, "loss": 0.1}],
        result=lambda i, plan: {"overall": 0.7, "metrics": {"shapes": {"mean": 0.7}}},
    )
    said: list[str] = []
    outcome = write_outputs(loaded, echo=said.append)
    md = (tmp_path / "out" / "table.md").read_text()
    reason = "not beside the paper's table2: no metric of these rows maps to one of its columns"
    assert said == [reason]
    assert f"\nNot beside the paper's table2: {reason.split(': ', 1)[1]}." in md
    assert "paper:" not in md and "## Beside the paper" not in md
    assert not stale.exists() and stale not in outcome.outputs


def test_a_figure_drawn_from_some_rows_says_so_in_its_title(tmp_path: Path, monkeypatch):
    """`dsharp reproduce --only` (or an interrupted study) draws the finished rows; the PNG
    read alone looked like the whole figure."""
    import shutil

    import dsharp.study_outputs

    rows = [{"label": "a"}, {"label": "b"}, {"label": "c"}]
    plot = {"x": "step", "y": "loss"}
    figure = {"kind": "figure", "name": "fig4", "title": "Figure 4", "plot": plot}
    path = write_study(tmp_path, rows, **figure, overrides=["train.max_steps=2"], evaluate=None)
    loaded = load_study(path)
    finish_rows(loaded, metrics=lambda i, plan: [{"step": 1, "loss": 1.0}])
    titles: list[str] = []
    monkeypatch.setattr(
        dsharp.study_outputs, "plot_steps", lambda curves, spec, title, *a: titles.append(title)
    )
    write_outputs(loaded, echo=lambda _: None)
    shutil.rmtree(loaded.rows[2].run_dir / "checkpoints")
    write_outputs(loaded, echo=lambda _: None)
    assert titles == ["Figure 4", "Figure 4 (partial: 1 of 3 rows not finished)"]

"""`dsharp compare` tells sources that would share a label apart by the shortest end of
their paths that differs (``qa1/eval-final.json``), not by the whole path, which filled the
legend and the title of compare.png."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cli_results import invoke
from drawn_figures import drawn_figures
from dsharp import compare_plot
from dsharp.report import distinct_labels


@pytest.fixture
def figures(monkeypatch):
    """The figures compare.png would be written from."""
    return drawn_figures(monkeypatch, compare_plot)


def _labels(*paths: str) -> list[str]:
    named = [("fine-tuned", {"n": i}) for i in range(len(paths))]
    labelled = distinct_labels(named, [Path(p) for p in paths])
    assert [result["n"] for _, result in labelled] == list(range(len(paths)))  # order kept
    return [label for label, _ in labelled]


def test_same_named_files_are_labelled_by_the_shortest_end_of_path_that_differs():
    assert _labels("/r/qa1/eval-final.json", "/r/qa2/eval-final.json") == [
        "qa1/eval-final.json",
        "qa2/eval-final.json",
    ]
    assert _labels("/x/a/run/e.json", "/x/b/run/e.json", "/x/c/e.json") == [
        "a/run/e.json",
        "b/run/e.json",
        "c/e.json",
    ]
    assert _labels("e.json", "../e.json") == ["e.json", "../e.json"]
    assert _labels("/r/qa1/e.json", "/r/qa1/e.json") == ["/r/qa1/e.json", "/r/qa1/e.json (2)"]


def test_labels_that_do_not_clash_are_kept_and_run_folders_keep_their_rule():
    named = [("base", {}), ("run", {}), ("run", {})]
    labelled = distinct_labels(named, [Path("/r/qa1/b.json"), Path("/x/run"), Path("/y/run")])
    assert [label for label, _ in labelled] == ["base", "x/run", "y/run"]
    # a shortened label meeting another row's own label: both by the path given
    named = [("qa1/e.json", {}), ("e", {}), ("e", {})]
    paths = [Path("/r/k.json"), Path("/r/qa1/e.json"), Path("/r/qa2/e.json")]
    labels = [label for label, _ in distinct_labels(named, paths)]
    assert labels == ["/r/k.json", "/r/qa1/e.json", "qa2/e.json"]


def test_compare_of_two_runs_final_evaluations_labels_them_by_their_runs(tmp_path, figures):
    paths = []
    for run, score in (("qa1", 0.25), ("qa2", 0.5)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "recipe.yaml").write_text("method:\n  name: rlhf_sharpening\n")
        paths.append(tmp_path / run / "eval-final.json")
        doc = {"label": "fine-tuned", "bench": "shapes", "rewards": ["shapes"]}
        paths[-1].write_text(json.dumps(doc | {"metrics": {"shapes": {"mean": score}}}))
    result = invoke(["compare", *paths, "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, result.output
    expected = ["qa1/eval-final.json", "qa2/eval-final.json"]
    rows = list(csv.reader((tmp_path / "cmp" / "compare.csv").read_text().splitlines()))
    assert [row[0] for row in rows[1:]] == expected
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert [line.split(" | ")[0] for line in markdown.splitlines()[2:4]] == [
        f"| {label}" for label in expected
    ]
    assert str(tmp_path) not in result.stdout.split("wrote")[0]  # the terminal table
    (figure,) = figures
    legend = figure.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == expected

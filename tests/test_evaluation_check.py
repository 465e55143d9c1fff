"""An evaluation JSON with a field of another type (edited by hand, or from another version)
is refused in one line naming the file and the field, by `dsharp compare` as by any command
that reads it, rather than failing with a traceback or being shown as a score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.evaluation_check import evaluation_problem


def _good() -> dict:
    images = [{"prompt": p, "seed": s, "score": 0.5} for p in ("a", "b") for s in (0, 1)]
    return {"bench": "shapes", "overall": 0.5, "metrics": {"shapes": {"mean": 0.5}}} | {
        "rewards": ["shapes"],
        "images": images,
    }


def _with(**fields) -> dict:
    return _good() | fields


def _image(**fields) -> dict:
    return _with(images=[{"prompt": "a", "seed": 0, "score": 0.5} | fields])


BAD = {
    "metrics-list": (_with(metrics=[]), "metrics: a list, not an object"),
    "metric-number": (_with(metrics={"shapes": 5}), "metrics.shapes: a number, not an object"),
    "metric-no-mean": (_with(metrics={"shapes": {"std": 0.1}}), "metrics.shapes: no mean"),
    "metric-text-mean": (_with(metrics={"shapes": {"mean": "x"}}), "metrics.shapes.mean: "),
    "overall-text": (_with(overall="high"), "overall: the text 'high', not a number"),
    "overall-bool": (_with(overall=True), "overall: true/false, not a number"),
    "categories-list": (_with(categories=[1]), "categories: a list, not an object"),
    "category-text": (_with(categories={"x": "y"}), "categories.x: the text 'y', not a number"),
    "groups-number": (_with(groups={"pairs": 1}), "groups.pairs: a number, not an object"),
    "rewards-text": (_with(rewards="shapes"), "rewards: the text 'shapes', not a list"),
    "bench-list": (_with(bench=["shapes"]), "bench: a list, not a name"),
    "images-text": (_with(images="oops"), "images: the text 'oops', not a list"),
    "image-not-object": (_with(images=[1]), "images[0]: a number, not an object"),
    "score-text": (_image(score="x"), "images[0].score: the text 'x', not a number"),
    "seed-null": (_image(seed=None), "images[0].seed: null, not a whole number"),
    "seed-fraction": (_image(seed=0.5), "images[0].seed: a number, not a whole number"),
    "no-seed": (_with(images=[{"prompt": 1}]), "images[0]: no seed"),
    "prompt-number": (_image(prompt=1), "images[0].prompt: a number, not text"),
    "category-number": (_image(category=1), "images[0].category: a number, not a name"),
    # a count: the budget column multiplies by it, the table shows it (audit F11)
    "n-images-null": (_with(n_images=None), "n_images: null, not a count"),
    "n-images-fraction": (_with(n_images=2.5), "n_images: a number, not a count"),
    "n-images-negative": (_with(n_images=-1), "n_images: a number, not a count"),
    "n-scored-text": (_with(n_scored="4"), "n_scored: the text '4', not a count"),
    "specs-list": (_with(reward_specs=[]), "reward_specs: a list, not an object"),
    "spec-no-name": (
        _with(reward_specs={"shapes": {"options": {}}}),
        "reward_specs.shapes.name: null, not a name",
    ),
    "spec-options-text": (
        _with(reward_specs={"shapes": {"name": "shapes", "options": "binary"}}),
        "reward_specs.shapes.options: the text 'binary', not an object",
    ),
    "spec-weight-null": (
        _with(reward_specs={"shapes": {"name": "shapes", "weight": None}}),
        "reward_specs.shapes.weight: null, not a number",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_field_of_another_type_is_named(case: str):
    data, expected = BAD[case]
    problem = evaluation_problem(data)
    assert problem is not None and problem.startswith(expected), problem


def test_what_evaluations_write_passes_including_nulls_for_nan():
    assert evaluation_problem(_good()) is None
    nulls = _with(overall=None, strict=None, categories={"x": None}, bench=None)
    nulls["metrics"]["shapes"]["mean"] = None
    nulls["images"][0]["score"] = None
    assert evaluation_problem(nulls) is None
    unscored = _with(images=[{"prompt": "a", "seed": 0}])  # no score: left out of pairing
    assert evaluation_problem(unscored) is None
    assert evaluation_problem({"metrics": {}}) is None  # fields not recorded are not checked
    spec = {"name": "shapes", "weight": 1.0, "normalize": "none", "options": {"binary": True}}
    counted = _with(n_images=4, n_scored=3.0, reward_specs={"shapes": spec})
    assert evaluation_problem(counted) is None


def test_a_null_image_count_with_a_search_budget_is_refused_not_a_traceback(tmp_path):
    """`n_images: null` beside reward_evals_per_image crashed the table's budget column
    with a TypeError (audit F11)."""
    good, bad = tmp_path / "good.json", tmp_path / "nimg_null.json"
    good.write_text(json.dumps(_good()))
    bad.write_text(json.dumps(_with(n_images=None, reward_evals_per_image=3)))
    result = _compare(tmp_path, good, bad)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"error: {bad}: not a dsharp evaluation (n_images: null, not a count)"
    )


def _compare(tmp_path: Path, *args) -> object:
    return CliRunner().invoke(
        app, ["compare", *map(str, args), "--out", str(tmp_path / "out"), "--no-plot"]
    )


@pytest.mark.parametrize("paired", [False, True], ids=["table", "paired"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_compare_refuses_the_file_in_one_line_without_a_traceback(tmp_path, case, paired):
    data, expected = BAD[case]
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_good()))
    bad.write_text(json.dumps(data))
    result = _compare(tmp_path, *(["--paired"] if paired else []), good, bad)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {bad}: not a dsharp evaluation ({expected}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out" / "compare.md").exists()


def test_a_run_folder_names_its_evaluation_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval-shapes.json").write_text(json.dumps(_with(metrics=[])))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_good()))
    for extra in ([], ["--against", "paper"]):
        result = _compare(tmp_path, good, run, *extra)
        assert result.exit_code == 1, result.output
        expected = f"error: {run / 'eval-shapes.json'}: not a dsharp evaluation (metrics: a list"
        assert result.stderr.startswith(expected), result.stderr

"""`--json` on `dsharp compare` and `dsharp reproduce`: stdout holds one JSON document with
what a script wants (the table, the files written, each row's status), and notes, progress
and the human tables go to stderr, as `eval --json` and `runs --json` keep them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.study import load_study
from study_rows import finish_rows

ROOT = Path(__file__).resolve().parent.parent
TINY_RLHF = ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _invoke(args: list[object], **kwargs):
    result = CliRunner().invoke(app, [str(a) for a in args], **kwargs)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


# --------------------------------------------------------------------------- compare


def _evaluations(tmp_path: Path) -> list[Path]:
    """Two evaluations: b lacks a column and has a null, and their seeds differ (a note)."""
    a = {"metrics": {"clip": {"mean": 0.5}, "aesthetic": {"mean": 5.0}}, "seeds": [0, 1]}
    b = {"metrics": {"clip": {"mean": None}}, "seeds": [0]}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, doc in zip(paths, (a, b), strict=True):
        path.write_text(json.dumps(doc), encoding="utf-8")
    return paths


def test_compare_json_holds_the_table_the_notes_and_the_files(tmp_path):
    out = tmp_path / "out"
    result = _invoke(["compare", *_evaluations(tmp_path), "--out", out, "--no-plot", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["columns"] == ["run", "clip", "aesthetic"]
    assert doc["rows"] == [["a", 0.5, 5.0], ["b", None, None]]  # missing: null, as CSV's empty
    assert doc["files"] == [str(out / "compare.md"), str(out / "compare.csv")]
    [note] = doc["notes"]
    assert note.startswith("seeds differ (a: ")
    assert f"note: {note}" in result.stderr  # still said where it was said without --json
    assert all((out / name).is_file() for name in ("compare.md", "compare.csv"))


def test_compare_json_beside_the_paper(tmp_path):
    a, b = _evaluations(tmp_path)
    paper = _invoke(["compare", a, "--against", "paper", "--out", tmp_path / "p", "--json"])
    assert paper.exit_code == 0, paper.output
    doc = json.loads(paper.stdout)
    assert doc["columns"][0] == "row" and doc["rows"]
    assert "-" not in [cell for row in doc["rows"] for cell in row]  # missing is null
    assert doc["files"] == [str(tmp_path / "p" / "compare.md"), str(tmp_path / "p" / "compare.csv")]
    lines = [
        line.split(": ", 1)[1] for line in paper.stderr.splitlines() if line.startswith("note:")
    ]
    assert doc["notes"] == lines


# --------------------------------------------------------------------------- reproduce


def _study(tmp_path: Path) -> Path:
    data = {
        "kind": "table",
        "name": "table2",
        "title": "tiny table",
        "base": str(TINY_RLHF),
        "overrides": ["model.pretrained=dsharp-mini", "train.max_steps=1", "sample.steps=2"],
        "rows": [
            {"label": "base", "train": False},
            {"label": "n=2", "overrides": ["method.n=2"]},
        ],
        "evaluate": {"prompts": ["a red circle"], "seeds": 1},
        "output_dir": str(tmp_path / "study"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_reproduce_dry_run_json_is_the_plan(tmp_path):
    study = _study(tmp_path)
    secret = "sk-SECRET-canary-123"
    grader = {"name": "mllm", "options": {"model": "m", "extra_body": {"api_key": secret}}}
    given = "rewards.0=" + json.dumps(grader)
    result = _invoke(["reproduce", study, given, "--dry-run", "--only", "n=2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["study"], doc["kind"], doc["dry_run"]) == (str(study), "table", True)
    assert doc["output_dir"] == str(tmp_path / "study")
    [shown] = doc["given"]
    assert shown.startswith("rewards.0=") and '"api_key": "<redacted>"' in shown
    rows = {row["label"]: row for row in doc["rows"]}
    assert rows["base"]["status"] == "evaluate" and not rows["base"]["selected"]
    assert rows["n=2"]["status"] == "train" and rows["n=2"]["selected"]
    assert rows["n=2"]["folder"] == str(tmp_path / "study" / "n-2")
    assert rows["n=2"]["overrides"] == ["method.n=2"] and rows["n=2"]["conflict"] is None
    assert secret not in result.output
    assert not (tmp_path / "study").exists()


def test_reproduce_json_says_what_it_wrote_and_what_each_row_did(tmp_path, monkeypatch):
    """The base row is finished; the trained row has its checkpoint but no evaluation: it is
    evaluated (a stand-in here), and the table written."""
    import dsharp.study

    study = _study(tmp_path)
    loaded = load_study(study)
    finish_rows(loaded, result=lambda i, plan: {"overall": 0.5})
    loaded.rows[1].eval_path.unlink()

    def evaluate_row(plan, progress):
        doc = {"label": plan.label, "trained": plan.trained, "overall": 0.75}
        plan.eval_path.write_text(json.dumps(doc), encoding="utf-8")
        return doc

    monkeypatch.setattr(dsharp.study, "_evaluate_row", evaluate_row)
    result = _invoke(["reproduce", study, "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    out = tmp_path / "study"
    assert doc["dry_run"] is False and doc["missing"] == []
    assert {str(out / "table.md"), str(out / "table.csv")} <= set(doc["outputs"])
    rows = {row["label"]: row for row in doc["rows"]}
    assert (rows["base"]["ran"], rows["n=2"]["ran"]) == (None, "evaluate")
    assert all(row["status"] == "reuse" and row["shown"] for row in doc["rows"])
    assert f"[n=2] evaluate -> {out / 'n-2'}" in result.stderr  # row lines: stderr


def test_reproduce_dry_run_json_with_a_conflict_prints_the_plan_and_exits_2(tmp_path):
    study = _study(tmp_path)
    loaded = load_study(study)
    finish_rows(loaded, result=lambda i, plan: {"overall": 0.5})
    text = study.read_text(encoding="utf-8").replace("method.n=2", "method.n=3")
    study.write_text(text, encoding="utf-8")
    result = _invoke(["reproduce", study, "--dry-run", "--json"])
    assert result.exit_code == 2, result.output
    rows = {row["label"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["n=2"]["status"] == "conflict" and "method.n" in rows["n=2"]["conflict"]
    assert result.stderr.strip().startswith(f"error: {study}: rows.1 (n=2): ")


@pytest.mark.parametrize("command", ["compare", "merge", "reproduce"])
def test_json_is_in_the_help(command):
    assert "--json" in _invoke([command, "--help"], env={"COLUMNS": "200"}).stdout

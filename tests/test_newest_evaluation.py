"""Which evaluation a run folder stands for, in `dsharp runs` (score column) and `dsharp
compare RUN` (row), and how a file's row is labelled."""

from __future__ import annotations

import json
import os

from dsharp.report import eval_files, load_result
from dsharp.runs import summarise_run


def _run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: {name: rlhf_sharpening}\ntrain: {max_steps: 1}\n")
    old, new = run / "eval-z-old.json", run / "eval-a-new.json"  # names sort the other way
    old.write_text(json.dumps({"overall": 0.1, "step": 1}))
    new.write_text(json.dumps({"overall": 0.9, "step": 2}))
    os.utime(old, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.utime(new, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    return run


def test_runs_score_is_the_newest_evaluation(tmp_path):
    """`dsharp runs` scores a run by its newest evaluation, by modification time."""
    summary = summarise_run(_run(tmp_path))
    assert (summary.score, summary.score_from, summary.score_step) == (0.9, "eval-a-new.json", 2)


def test_compare_row_of_a_folder_is_its_newest_evaluation(tmp_path):
    """`dsharp compare RUN` shows the newest eval*.json, by modification time."""
    run = _run(tmp_path)
    assert [p.name for p in eval_files(run)] == ["eval-z-old.json", "eval-a-new.json"]
    label, result = load_result(run)
    assert label == "run" and result["overall"] == 0.9


def test_a_run_folders_other_json_keeps_its_own_name_as_label(tmp_path):
    """Only eval*.json files in a run folder are labelled by the run; another file there keeps
    its stem, so rows stay distinguishable."""
    run = _run(tmp_path)
    (run / "scores.json").write_text(json.dumps({"overall": 0.5}))
    assert load_result(run / "scores.json")[0] == "scores"
    assert load_result(run / "eval-a-new.json")[0] == "run"

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


def _run_scored_by_other_rewards(tmp_path):
    """A run evaluated on its bench (eval-shapes.json), then on that bench's prompts by
    another reward (`dsharp eval --bench shapes --reward brightness`, newer)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: {name: rlhf_sharpening}\ntrain: {max_steps: 1}\n")
    own = run / "eval-shapes.json"
    own.write_text(json.dumps({"bench": "shapes", "rewards": ["shapes"], "overall": 0.25}))
    other = run / "eval-shapes-reward-brightness.json"
    other.write_text(json.dumps({"bench": "shapes", "rewards": ["brightness"], "overall": 0.75}))
    os.utime(own, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.utime(other, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    return run, other


def test_an_evaluation_by_other_rewards_is_no_runs_score_where_the_bench_scored_it(tmp_path):
    """`dsharp runs` showed the newer brightness score (0.75, from
    shapes-reward-brightness) as the run's score on shapes."""
    run, other = _run_scored_by_other_rewards(tmp_path)
    summary = summarise_run(run)
    assert (summary.score, summary.score_from) == (0.25, "eval-shapes.json")
    (run / "eval-shapes.json").unlink()  # the only evaluation left: it is the score, named
    summary = summarise_run(run)
    assert (summary.score, summary.score_from) == (0.75, other.name)


def test_compare_row_of_a_folder_is_its_bench_score_not_other_rewards(tmp_path):
    from typer.testing import CliRunner

    from dsharp.cli import app

    run, other = _run_scored_by_other_rewards(tmp_path)
    label, result = load_result(run)
    assert (label, result["overall"]) == ("run", 0.25)
    args = ["compare", str(run), "--out", str(tmp_path / "out"), "--no-plot"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert " ".join(done.stderr.split()) == (
        f"{run}: using eval-shapes.json, its newest evaluation by its bench's own rewards "
        f"(also there: {other.name}; give a file to choose)"
    )
    assert load_result(other)[1]["overall"] == 0.75  # given as a file, it is compared


def test_an_evaluation_only_folder_names_the_sampler_of_the_evaluation_it_shows(tmp_path):
    """The method and model of a folder `dsharp eval --recipe` wrote come from the evaluation
    that gives its score, not from a newer one by other rewards."""
    folder = tmp_path / "mini-demon"
    folder.mkdir()
    own = {"bench": "shapes", "rewards": ["shapes"], "overall": 0.5, "model": "dsharp-mini"}
    (folder / "eval-shapes.json").write_text(json.dumps(own | {"sample": {"method": "demon"}}))
    other = own | {"rewards": ["brightness"], "model": "/elsewhere", "sample": {"method": "x"}}
    newer = folder / "eval-shapes-reward-brightness.json"
    newer.write_text(json.dumps(other))
    os.utime(newer, ns=(4_000_000_000_000_000_000, 4_000_000_000_000_000_000))
    summary = summarise_run(folder)
    assert (summary.method, summary.model, summary.score) == ("demon (sampler)", "dsharp-mini", 0.5)

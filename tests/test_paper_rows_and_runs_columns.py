"""Which paper row and which evaluation a comparison uses, and which reward and score
`dsharp runs` shows."""

from __future__ import annotations

import json
import os

import pytest

from dsharp.bench.paper import compare_with_paper, merge_results
from dsharp.paper_results import results_for_paper
from dsharp.runs import summarise_run


def _clip(value: float) -> dict:
    return {"metrics": {"clip": {"mean": value}}}


def test_an_explicit_match_beats_the_results_own_paper_row():
    """`match[label]` is asked for by name, so it wins over `paper_row`."""
    result = {**_clip(0.33), "paper_row": "ddpo"}
    _, rows = compare_with_paper({"x": result}, "table1", match={"x": "iterpo"})
    assert rows[0][0] == "paper:iterpo"
    _, rows = compare_with_paper(
        {"n2": {**_clip(0.33), "paper_row": 2}}, "table2", match={"n2": "4"}
    )
    assert rows[0][0] == "paper:4" and rows[2][1] == pytest.approx(0.33 - 0.336)


def test_merged_results_take_the_later_value_of_a_metric_both_hold():
    """Merge_results promises that a later result wins a clash."""
    merged = merge_results([_clip(0.1), {**_clip(0.2), "paper_row": 3}])
    assert merged["metrics"]["clip"] == {"mean": 0.2} and merged["paper_row"] == 3


def test_compare_against_paper_shows_a_run_folders_newest_value_of_a_metric(tmp_path):
    """A run re-evaluated with the
    same reward shows the newer evaluation's number, not the older one's."""
    run = tmp_path / "run"
    run.mkdir()
    old, new = run / "eval-a.json", run / "eval-b.json"
    old.write_text(json.dumps({"metrics": {"clip": {"mean": 0.30}, "aesthetic": {"mean": 5.0}}}))
    new.write_text(json.dumps(_clip(0.34)))
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    label, merged = results_for_paper(run, "table1")
    assert label == "run" and merged["untrained"] is True
    assert merged["metrics"] == {"clip": {"mean": 0.34}, "aesthetic": {"mean": 5.0}}


def _run_folder(tmp_path, metrics: str, evals: list[tuple[str, str]]):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: {name: rlhf_sharpening}\ntrain: {max_steps: 2}\n")
    (run / "metrics.jsonl").write_text(metrics)
    for age, (name, text) in enumerate(evals):
        (run / name).write_text(text)
        os.utime(run / name, (1_000_000 + age, 1_000_000 + age))  # listed order: oldest first
    return run


def test_runs_reward_is_the_last_logged_finite_reward(tmp_path):
    """The reward column is the newest step's, not the first's."""
    metrics = '{"step": 1, "reward": 0.1}\n{"step": 2, "reward": 0.9}\n{"step": 3, "reward": NaN}\n'
    summary = summarise_run(_run_folder(tmp_path, metrics, []))
    assert summary.reward == 0.9


@pytest.mark.parametrize("unscored", ["null", "NaN"])
def test_runs_score_skips_a_newer_evaluation_without_an_overall(tmp_path, unscored):
    """A newest evaluation whose overall is null or NaN
    (nothing scored) is passed over for the last real score, not shown as a crash or NaN."""
    evals = [
        ("eval-final.json", json.dumps({"overall": 0.4, "step": 2})),
        ("eval-later.json", '{"overall": ' + unscored + ', "metrics": {}}'),
    ]
    summary = summarise_run(_run_folder(tmp_path, '{"step": 1, "reward": 0.5}\n', evals))
    assert (summary.score, summary.score_from, summary.score_step) == (0.4, "eval-final.json", 2)

"""The post-training report's numbers and sentence, which rewards and settings score the
evaluation, and which files `dsharp compare --against paper` reads from a run folder."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from dsharp.bench.paper import MISSING, compare_with_paper, metric_value
from dsharp.config import load_recipe
from dsharp.paper_results import results_for_paper
from dsharp.posttrain import (
    _paired_sentence,
    _pick_grid_prompts,
    eval_settings,
    eval_specs,
    report_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
TINY_RLHF = ROOT / "recipes" / "tiny" / "rlhf_sharpening.yaml"


def _recipe(tmp_path: Path, *overrides: str):
    return load_recipe(
        TINY_RLHF,
        ["model.pretrained=dsharp-mini", f"output_dir={tmp_path / 'run'}", *overrides],
    )


def _evaluation(overall: float, **extra) -> dict:
    sample = {"method": "default", "steps": 4, "guidance": 5.0, "eta": 0.0}
    return {
        "overall": overall,
        "n_prompts": 2,
        "seeds": [0],
        "n_images": 2,
        "sample": sample,
        "rewards": ["shapes"],
        **extra,
    }


def test_report_rows_put_each_models_own_value_and_delta_tuned_minus_base(
    tmp_path: Path,
):
    """Each category and group row shows the base model's value, the tuned one's, and tuned
    minus base; a grouping with two labels is reported too."""
    base = _evaluation(
        0.25,
        categories={"color": 0.2, "spatial": 0.5},
        groups={"size": {"small": 0.1, "large": 0.3}, "one": {"all": 0.25}},
        constraints={"count": 0.4},
    )
    tuned = _evaluation(
        0.5,
        categories={"color": 0.6, "spatial": 0.25},
        groups={"size": {"small": 0.7, "large": 0.2}, "one": {"all": 0.5}},
        constraints={"count": 0.9},
    )
    report = report_markdown(_recipe(tmp_path), base, tuned, tmp_path / "ckpt")
    assert "| overall | 0.2500 | 0.5000 | +0.2500 |" in report
    assert "| category: color | 0.2000 | 0.6000 | +0.4000 |" in report
    assert "| category: spatial | 0.5000 | 0.2500 | -0.2500 |" in report
    assert "| size: small | 0.1000 | 0.7000 | +0.6000 |" in report
    assert "| size: large | 0.3000 | 0.2000 | -0.1000 |" in report
    assert "| constraints met: count | 0.4000 | 0.9000 | +0.5000 |" in report
    assert "one: all" not in report  # one label: the same images as overall


def test_report_says_what_its_rows_measure_and_which_images_the_grid_shows(tmp_path: Path):
    """ "strict" and "constraints met" are not self-explaining; a table without them does not
    explain them."""
    base = _evaluation(0.25, strict=0.0, constraints={"count": 0.4})
    tuned = _evaluation(0.5, strict=0.5, constraints={"count": 0.9})
    report = report_markdown(_recipe(tmp_path), base, tuned, tmp_path / "ckpt")
    assert "overall: mean score of the scored images (shapes, higher is better)" in report
    assert "strict: share of images that meet every constraint of their prompt" in report
    assert "constraints met: share of the constraints of that kind that are met" in report
    assert "delta: fine-tuned minus base" in report
    assert "each grid prompt's first seed, the same noise for both models" in report
    plain = report_markdown(_recipe(tmp_path), _evaluation(0.25), _evaluation(0.5), Path("c"))
    assert "strict:" not in plain and "constraints met:" not in plain


def test_paired_sentence_says_how_often_the_fine_tuned_model_won_and_lost():
    """2 of 3 images scored higher, 1 lower."""

    def images(scores):
        return [
            {"prompt": f"p{i}", "seed": 0, "score": s, "category": "c"}
            for i, s in enumerate(scores)
        ]

    sentence = _paired_sentence(
        {"images": images([0.0, 0.0, 1.0])}, {"images": images([1.0, 0.5, 0.0])}
    )
    assert "delta +0.1667" in sentence
    assert "scored higher on 67% of the images and lower on 33%" in sentence


def test_grid_prompts_take_turns_over_categories():
    """The grid takes prompts from every category in turn, not the first k prompts."""
    prompts = ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert _pick_grid_prompts(prompts, lambda p: p[0], 4) == ["a0", "b0", "c0", "a1"]
    assert _pick_grid_prompts(prompts, None, 2) == ["a0", "a1"]


def test_eval_rewards_beat_the_benchs_and_the_training_rewards(tmp_path: Path):
    """The evaluation is scored by
    eval.rewards when set, else by the bench's reward, else by the training rewards."""
    bench = SimpleNamespace(rewards=[{"name": "clip"}])
    chosen = _recipe(tmp_path, "eval.rewards=[{name: shapes_soft}]")
    assert [s.name for s in eval_specs(chosen, bench)] == ["shapes_soft"]
    assert [s.name for s in eval_specs(chosen, None)] == ["shapes_soft"]
    plain = _recipe(tmp_path)
    assert [s.name for s in eval_specs(plain, bench)] == ["clip"]
    assert [s.name for s in eval_specs(plain, None)] == ["shapes"]


def test_evaluation_of_a_non_square_run_samples_at_its_training_size(tmp_path: Path):
    """A 32x64 run is evaluated at 32x64, and a
    sample section's own size wins."""
    settings = eval_settings(_recipe(tmp_path, "train.height=32", "train.width=64"))
    assert (settings.height, settings.width) == (32, 64)
    own = _recipe(tmp_path, "train.height=32", "train.width=64", "sample.width=48")
    assert eval_settings(own).width == 48


def test_a_nan_metric_is_missing_and_the_next_source_is_used():
    """A NaN mean (nothing scored) is no value; a paper column falls
    back to its next metric key, and a column with none shows '-' and no delta."""
    assert metric_value({"metrics": {"clip_score": math.nan, "clip": 0.3}}, "clip_score") == 0.3
    result = {"metrics": {"clip": {"mean": math.nan}, "aesthetic": {"mean": 6.0}}}
    columns, rows = compare_with_paper({"x": result}, "table1")
    col = columns.index("clip_score")
    assert rows[1][col] == MISSING and rows[2][col] == MISSING
    assert rows[2][columns.index("aesthetic")] == pytest.approx(6.0 - 5.531)


def test_compare_against_paper_never_reads_the_base_models_evaluation(tmp_path: Path):
    """A run folder's row holds the run's numbers,
    even when the report's eval-base.json looks newer (coarse clock, copied folder)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.1}\n')
    final, base = run / "eval-final.json", run / "eval-base.json"
    final.write_text(json.dumps({"overall": 0.7, "metrics": {"clip": {"mean": 0.34}}}))
    base.write_text(
        json.dumps({"overall": 0.3, "metrics": {"clip": {"mean": 0.30}, "aesthetic": 5.0}})
    )
    os.utime(final, (1_000_000, 1_000_000))
    os.utime(base, (2_000_000, 2_000_000))
    label, merged = results_for_paper(run, "table1")
    assert label == "run" and merged["metrics"] == {"clip": {"mean": 0.34}}
    final.unlink()
    with pytest.raises(FileNotFoundError, match="no eval"):
        results_for_paper(run, "table1")


def test_a_whole_nfe_per_image_is_shown_as_a_count():
    from dsharp.report import _cell, flatten_result

    assert _cell(flatten_result({"nfe_per_image": 50.0})["nfe/image"]) == "50"
    assert _cell(flatten_result({"nfe_per_image": 52.5})["nfe/image"]) == "52.5000"


def test_report_shows_a_missing_value_as_a_dash_and_says_how_many_images_scored(
    tmp_path: Path,
):
    """A category nothing scored in (NaN) read 'nan' and '+nan' in report.md, and means over
    fewer images than were drawn (on_error: missing) were not said to be."""
    base = _evaluation(0.25, n_scored=1, categories={"color": math.nan, "spatial": 0.25})
    tuned = _evaluation(0.5, n_scored=2, categories={"color": 0.75, "spatial": 0.25})
    report = report_markdown(_recipe(tmp_path), base, tuned, tmp_path / "ckpt")
    assert "| category: color | - | 0.7500 | - |" in report
    assert "nan" not in report
    assert "(2 images per model; scored: base 1, fine-tuned 2)" in report
    whole = report_markdown(_recipe(tmp_path), _evaluation(0.25), _evaluation(0.5), Path("c"))
    assert "(2 images per model)" in whole

"""`dsharp eval --bench t2i-compbench`: an evaluator that cannot be built (its weights are
not there, offline) is an error before the model loads, as a reward of another bench is;
only the categories still to score need theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.bench.t2i_compbench import PARTIAL_FILE, pending_categories
from dsharp.bench.t2i_data import PromptSet
from dsharp.cli import app

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-compbench"


def test_a_missing_evaluator_is_an_error_before_the_model_loads(tmp_path, tiny_sd_dir, monkeypatch):
    import dsharp.commands.common

    loaded: list[str] = []

    def no_model(*args, **kwargs):
        loaded.append("model")
        raise AssertionError("the model must not load before the evaluators are built")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", no_model)
    data = tmp_path / "data"
    data.mkdir()
    (data / "color_val.txt").write_text("a red apple\r\na blue cup\r\n", encoding="utf-8")
    empty = tmp_path / "no-blip"  # a folder without the model's files
    empty.mkdir()
    args = ["eval", "--model", str(tiny_sd_dir), "--bench", "t2i-compbench"]
    args += ["--categories", "color", "--limit", "1", "--images-per-prompt", "1"]
    args += ["--data", str(data), "--set", f"blip_model={empty}", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert loaded == []
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: t2i-compbench BLIP-VQA (blip_* options) evaluator: "
    ), result.stderr


def test_only_categories_with_prompts_left_to_score_need_their_evaluators(tmp_path):
    prompts = {
        "color": ["a red apple", "a blue cup", "a green hat"],
        "spatial": ["a cat on the left of a dog", "a cup near a plate"],
    }
    prompt_set = PromptSet("val", prompts)
    assert pending_categories(prompt_set, ["color", "spatial"], None) == ["color", "spatial"]
    rows = [
        {"category": "spatial", "index": 0, "prompt": "a cat on the left of a dog"},
        {"category": "color", "index": 0, "prompt": "a red apple"},
    ]
    (tmp_path / PARTIAL_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    # --limit 1 selects the first prompt of each: both scored, no evaluator needed
    assert pending_categories(prompt_set, ["color", "spatial"], 1, tmp_path) == []
    # all prompts: both categories have some left
    assert pending_categories(prompt_set, ["color", "spatial"], None, tmp_path) == [
        "color",
        "spatial",
    ]
    rows.append({"category": "spatial", "index": 1, "prompt": "a cup near a plate"})
    (tmp_path / PARTIAL_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pending_categories(prompt_set, ["color", "spatial"], None, tmp_path) == ["color"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")
def test_a_scorer_of_other_options_is_refused(tiny_sd_dir):
    from dsharp.bench import run_t2i_compbench
    from dsharp.bench.t2i_scoring import EvaluatorOptions, T2IScorer

    scorer = T2IScorer(EvaluatorOptions(blip_model="other", noun_phrases="rules"))
    with pytest.raises(ValueError, match="other evaluator options"):
        run_t2i_compbench(
            object(),
            categories="color",
            data_dir=SHARED,
            evaluator_options={"noun_phrases": "rules"},
            scorer=scorer,
        )

"""`dsharp eval --bench B --prompts FILE`: the bench labels the file's prompts (categories,
groupings) before any image is made, and leaves out the labels it cannot give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsharp.cli import app
from fake_rewards import NAME, brightness_registered

ROOT = Path(__file__).resolve().parents[1]


def _invoke(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_prompt_file_the_bench_cannot_label_is_scored_without_its_categories(
    tiny_sd_dir, tmp_path
):
    """README documents --bench with --reward and --prompts: a prompt outside the shapes
    grammar, scored by another reward, gets a result without categories and a note, not
    an error once every image is made."""
    prompts = tmp_path / "cat.txt"
    prompts.write_text("a photo of a cat\n")
    out = tmp_path / "cat.json"
    args = ["eval", "--model", tiny_sd_dir, "--bench", "shapes", "--reward", NAME]
    args += ["--prompts", prompts, "--seeds", "1", "--steps", "1", "--out", out, "--json"]
    with brightness_registered():
        result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert (
        "note: --bench shapes cannot label every prompt of "
        f"{prompts}: unknown word 'photo' in prompt 'a photo of a cat'; the result has no "
        "categories and no 'pairs' groups"
    ) in " ".join(result.stderr.split())
    doc = json.loads(out.read_text())
    assert doc["bench"] == "shapes" and "categories" not in doc and "groups" not in doc
    assert doc["images"] == [{"prompt": "a photo of a cat", "seed": 0, "score": doc["overall"]}]


def test_limit_with_a_prompt_the_bench_cannot_label_is_refused_as_without_it(tiny_sd_dir, tmp_path):
    """--limit does not fail on the bench's categories first (exit 1): the prompt is refused
    by the reward that cannot score it, exit 2 and the same line as without --limit."""
    prompts = tmp_path / "cat.txt"
    prompts.write_text("a red circle\na photo of a cat\n")
    args = ["eval", "--model", tiny_sd_dir, "--bench", "shapes", "--prompts", prompts]
    args += ["--seeds", "1", "--steps", "1"]
    whole, limited = _invoke(args), _invoke([*args, "--limit", "2"])
    assert (whole.exit_code, limited.exit_code) == (2, 2), limited.output
    assert limited.stderr == whole.stderr
    assert "reward 'shapes' cannot score a prompt: unknown word 'photo'" in limited.stderr


def test_evaluate_labels_every_prompt_before_it_samples(monkeypatch):
    """A categoriser that fails raises before any image is generated, not after."""
    from dsharp.evaluate import evaluate

    def no_generation(*args, **kwargs):
        raise AssertionError("prompts must be labelled before sampling")

    def category_of(prompt: str) -> str:
        if prompt == "a photo of a cat":
            raise ValueError(f"unknown word 'photo' in prompt {prompt!r}")
        return "single"

    monkeypatch.setattr("dsharp.evaluate.generate", no_generation)
    with pytest.raises(ValueError, match="unknown word 'photo'"):
        evaluate(None, ["a red circle", "a photo of a cat"], [], category_of=category_of)
    with pytest.raises(ValueError, match="unknown word 'photo'"):
        evaluate(None, ["a red circle", "a photo of a cat"], [], groupings={"g": category_of})


def test_bench_for_prompts_keeps_the_labels_it_can_give():
    from dsharp.evaluate import get_bench

    bench = get_bench("shapes")
    assert bench.for_prompts(["a red circle", "a blue square"]) is bench
    fitted = bench.for_prompts(["a red circle", "a photo of a cat"])
    assert fitted.category_of is None and dict(fitted.groupings) == {}
    assert fitted.unlabelled.startswith("unknown word 'photo' in prompt 'a photo of a cat'")


def test_a_recipes_report_on_prompts_its_bench_cannot_label_has_no_categories():
    """After training, the report's evaluation (eval.bench with eval.prompts scored by
    another reward) drops the categories instead of failing once its images are made."""
    from dsharp.config import load_recipe
    from dsharp.posttrain import eval_plan

    overrides = ["eval.prompts=[a photo of a cat, a red circle]", "eval.rewards=[{name: clip}]"]
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", overrides, validate_files=False)
    prompts, specs, bench = eval_plan(recipe)  # eval.limit 12 per category: no categories
    assert prompts == ["a photo of a cat", "a red circle"] and [s.name for s in specs] == ["clip"]
    assert bench.name == "shapes" and bench.category_of is None

"""`dsharp eval` and ``dsharp.evaluate_model`` score the same prompts with the same rewards
(one choice in dsharp.eval_inputs), and each names its own inputs when one is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dsharp
from dsharp.cli import app

PROMPT_FILE = "a red circle\ntwo blue squares\na green triangle\n"


@pytest.fixture(scope="module")
def mini() -> Any:
    """A model for ``dsharp.evaluate_model`` to accept (it refuses what is none)."""
    return dsharp.load_model("dsharp-mini", device="cpu")


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each evaluation was asked to score, in place of sampling and scoring."""
    import dsharp.commands.common
    import dsharp.evaluate

    calls: list[dict[str, Any]] = []

    def evaluate(model, prompts, specs, **kwargs):
        category_of = kwargs.get("category_of")
        calls.append(
            {
                "prompts": list(prompts),
                "rewards": [s.model_dump(mode="json") for s in specs],
                "categories": [category_of(p) for p in prompts] if category_of else None,
                "groupings": sorted(kwargs.get("groupings") or {}),
            }
        )
        return {"n_images": 1, "n_scored": 1, "overall": 0.0}

    monkeypatch.setattr(dsharp.evaluate, "evaluate", evaluate)
    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", lambda *a: None)
    return calls


@pytest.mark.parametrize(
    ("flags", "keywords"),
    [
        (["--bench", "shapes"], {"bench": "shapes"}),
        (["--bench", "shapes", "--limit", "2"], {"bench": "shapes", "limit": 2}),
        (["--bench", "shapes", "--prompts", "FILE"], {"bench": "shapes", "prompts": "FILE"}),
        (["--prompts", "FILE", "--reward", "shapes"], {"prompts": "FILE", "rewards": ["shapes"]}),
        (
            ["--prompts", "FILE", "--reward", "shapes", "--limit", "1"],
            {"prompts": "FILE", "rewards": ["shapes"], "limit": 1},
        ),
        (
            ["--bench", "shapes", "--reward", "shapes_soft", "--limit", "1"],
            {"bench": "shapes", "rewards": ["shapes_soft"], "limit": 1},
        ),
    ],
)
def test_the_command_and_the_api_choose_the_same_prompts_and_rewards(
    scored, mini, tmp_path, flags, keywords
):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(PROMPT_FILE)
    flags = [str(prompt_file) if f == "FILE" else f for f in flags]
    args = ["eval", "--model", "dsharp-mini", *flags, "--seeds", "1", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rewards"]
    if keywords.get("prompts") == "FILE":
        keywords["prompts"] = Path(prompt_file)
    dsharp.evaluate_model(mini, seeds=1, **keywords)
    cli, api = scored
    assert cli == api
    assert cli["prompts"]


def test_a_missing_input_is_named_as_the_caller_names_it(scored, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(PROMPT_FILE)
    args = ["eval", "--model", "dsharp-mini", "--prompts", str(prompt_file), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "give --reward NAME (or --bench NAME) to say how to score" in result.stderr
    with pytest.raises(dsharp.RecipeError, match=r"^give rewards \(or a bench\) to say how"):
        dsharp.evaluate_model(object(), prompts=Path(prompt_file))
    with pytest.raises(dsharp.RecipeError, match=r"^give prompts or a bench$"):
        dsharp.evaluate_model(object())
    assert not scored

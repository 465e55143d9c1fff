"""`dsharp eval --set KEY=VALUE` reaches every reward that scores, wherever it was chosen
(``--reward``, a bench, a recipe's or a run's saved recipe), and the verifier; a reward that
takes no KEY refuses it in one line (exit 2) before any model loads. It reached only
``--reward`` and a bench's rewards: on a run's own rewards it was dropped without a word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_results import error_line, invoke
from fake_rewards import NAME, brightness_registered
from run_folders import run_folder_with_checkpoint

PROMPT = "a red circle"


def _run(tmp_path: Path, rewards: str) -> Path:
    """A dsharp-mini run folder (its step-1 UNet: the base's own) whose recipe has
    ``rewards`` (YAML of the recipe's top level, e.g. ``rewards: [{name: shapes}]``)."""
    from dsharp.models.loading import assets_dir

    recipe = f"model: {{pretrained: dsharp-mini}}\n{rewards}\ndata: {{generator: shapes}}\n"
    run = run_folder_with_checkpoint(tmp_path / "run", recipe)
    model = run / "checkpoints" / "step-000001" / "model"
    shutil.copytree(assets_dir() / "dsharp-mini" / "unet", model / "unet")
    return run


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(f"{PROMPT}\n", encoding="utf-8")
    return path


def _refuse_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsharp.commands.common

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(dsharp.commands.common, "load_model_for_inference", no_loading)


@pytest.mark.parametrize(
    "rewards",
    [
        "rewards: [{name: shapes}]",
        "rewards: [{name: shapes}]\neval: {rewards: [{name: shapes_soft}]}",
    ],
    ids=["run-rewards", "run-eval-rewards"],
)
def test_a_set_key_the_run_s_rewards_take_not_is_refused_before_loading(
    tmp_path, monkeypatch, rewards
):
    _refuse_loading(monkeypatch)
    run = _run(tmp_path, rewards)
    args = ["eval", "--checkpoint", run, "--prompts", _prompts(tmp_path), "--set", "bogus=1"]
    result = invoke([*args, "--out", tmp_path / "e.json", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    line = error_line(result.stderr)
    assert "bogus" in line and "bad options" in line, line
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize(
    ("run_rewards", "verifier_options"),
    [("shapes_soft", {}), ("shapes", {"binary": True})],
    ids=["only-verifies", "scores-too"],
)
def test_set_reaches_the_run_s_reward_as_verifier_only_where_it_scores_too(
    tmp_path, run_rewards, verifier_options
):
    """``--reward shapes --set binary=true`` on a run trained with shapes_soft (which takes no
    ``binary``) and demon: the key is for the reward that scores; the run's reward, which
    only verifies, keeps its own options, as before --set reached it. It refused the command
    (there was then no way to give shapes an option), though shapes alone takes the key."""
    run = _run(tmp_path, f"rewards: [{{name: {run_rewards}}}]")
    args = ["eval", "--checkpoint", run, "--prompts", _prompts(tmp_path), "--seeds", "1"]
    args += ["--steps", "1", "--device", "cpu", "--method", "demon", "--reward", "shapes"]
    result = invoke([*args, "--set", "binary=true", "--out", tmp_path / "e.json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["reward_specs"]["shapes"]["options"] == {"binary": True}
    [verifier] = saved["sample"]["reward"]
    assert (verifier["name"], verifier["options"]) == (run_rewards, verifier_options)


def test_a_recipe_s_eval_rewards_take_set_as_a_bench_s_do(tmp_path, monkeypatch):
    import dsharp.engine

    _refuse_loading(monkeypatch)
    monkeypatch.setattr(dsharp.engine, "build_model", lambda *a, **k: pytest.fail("loaded"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {pretrained: dsharp-mini}\nrewards: [{name: shapes}]\ndata: {generator: shapes}\n"
        f"eval: {{prompts: ['{PROMPT}'], rewards: [{{name: shapes}}]}}\n"
        f"output_dir: {tmp_path / 'out'}\n",
        encoding="utf-8",
    )
    result = invoke(["eval", "--recipe", recipe, "--set", "bogus=1", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "'bogus'" in error_line(result.stderr)


def test_set_reaches_the_run_s_own_reward_that_scores(tmp_path):
    """``nan_prompt``: the fake brightness reward cannot score that prompt; given to the
    run's reward by --set, the evaluation stops on it; without --set it scores."""
    run = _run(tmp_path, f"rewards: [{{name: {NAME}}}]")
    args = ["eval", "--checkpoint", run, "--prompts", _prompts(tmp_path), "--seeds", "1"]
    args += ["--steps", "1", "--device", "cpu", "--json"]
    with brightness_registered():
        plain = invoke([*args, "--out", tmp_path / "plain.json"])
        assert plain.exit_code == 0, plain.output
        result = invoke([*args, "--set", f"nan_prompt={PROMPT}", "--out", tmp_path / "e.json"])
    assert result.exit_code == 1, result.output
    assert error_line(result.stderr).startswith(
        f"error: reward '{NAME}' returned NaN for 1 sample(s) but its on_error is 'raise'"
    )
    assert not (tmp_path / "e.json").exists()

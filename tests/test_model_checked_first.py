"""A model folder that is not there (or holds no model) is said before any download or heavy
work: a benchmark's prompt files, a reward's or a verifier's weights. It used to come last,
after a download that may fail on its own offline (and then be the only error shown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dsharp.cli import app

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


def _never(what: str):
    def called(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"{what} before the model folder was checked")

    return called


@pytest.fixture
def heavy_work_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # dsharp.evaluate and dsharp.inference bind these names when first imported: imported
    # here, before the patch, so that they cannot keep the stand-ins after the test.
    import dsharp.bench.t2i_data
    import dsharp.commands.evaluate  # noqa: F401
    import dsharp.evaluate  # noqa: F401
    import dsharp.inference  # noqa: F401
    import dsharp.inference.base
    import dsharp.rewards.combine

    monkeypatch.setattr(dsharp.bench.t2i_data, "load_prompt_set", _never("prompts read"))
    monkeypatch.setattr(dsharp.rewards.combine, "CombinedReward", _never("rewards built"))
    monkeypatch.setattr(dsharp.inference.base, "Verifier", _never("verifier built"))


def _error(args: list[Any]) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stderr.strip()


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--bench", "t2i-compbench"],
        ["eval", "--reward", "clip", "--prompts", "PROMPTS"],
        ["sample", "--method", "inference_scaling", "--reward", "clip", "-p", "a red circle"],
    ],
    ids=["eval-t2i-compbench", "eval-reward", "sample-verifier"],
)
def test_a_missing_model_folder_is_said_before_prompts_download_or_weights_load(
    tmp_path: Path, heavy_work_fails: None, command: list[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    command = [str(prompts) if a == "PROMPTS" else a for a in command]
    missing = tmp_path / "no-such-model"
    code, error = _error([*command, "--model", missing, "--out", tmp_path / "out"])
    assert (code, error) == (1, f"error: model folder not found: {missing}")
    code, error = _error([*command, "--model", tmp_path, "--out", tmp_path / "out"])
    assert (code, error) == (
        1,
        f"error: {tmp_path}: a folder without model_index.json, not a diffusers model folder",
    )
    code, error = _error([*command, "--model", "dsharp-mni", "--out", tmp_path / "out"])
    assert code == 1 and error.endswith("did you mean 'dsharp-mini'?")


def test_a_missing_run_folder_is_said_before_the_verifier_loads(
    tmp_path: Path, heavy_work_fails: None
) -> None:
    args = ["sample", "--method", "inference_scaling", "--reward", "clip", "-p", "a red circle"]
    missing = tmp_path / "no-such-run"
    code, error = _error([*args, "--checkpoint", missing, "--out", tmp_path / "out"])
    assert (code, error) == (1, f"error: --checkpoint: {missing}: no such folder")


def test_a_recipe_naming_a_missing_nested_model_path_is_refused_by_validate() -> None:
    """``a/b/c`` is a path to the loader (more than one slash: no hub id); validation read
    it as a hub id and the run failed only when the model loaded."""
    result = CliRunner().invoke(
        app, ["recipes", "validate", str(QUICKSTART), "model.pretrained=no/such/model"]
    )
    assert result.exit_code == 2, result.output
    assert "model.pretrained: path not found: no/such/model" in result.stderr


def test_an_invalid_hub_id_is_said_as_such_not_as_uncached(
    tmp_path: Path, heavy_work_fails: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "a b/c: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set", as if
    downloading it somewhere could help; online, the hub's "couldn't connect" after the load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    said = (
        "model 'a b/c': not a local folder, a built-in model or a valid Hugging Face model id "
        "(org/name of letters, digits, '-', '_' and '.')"
    )
    args = ["sample", "--method", "inference_scaling", "--reward", "clip", "-p", "a red circle"]
    code, error = _error([*args, "--model", "a b/c", "--out", tmp_path / "out"])
    assert (code, error) == (1, f"error: {said}")
    result = CliRunner().invoke(
        app, ["recipes", "validate", str(QUICKSTART), "model.pretrained=a b/c"]
    )
    assert result.exit_code == 2, result.output
    # the label says it is the model: "model.pretrained: model 'a b/c'" said it twice
    assert f"model.pretrained: {said.removeprefix('model ')}" in result.stderr


def test_a_recipes_near_miss_of_a_built_in_name_says_model_once() -> None:
    """Before: "model.pretrained: model 'dsharp-mni' is neither ...", as the hub id's."""
    result = CliRunner().invoke(
        app, ["recipes", "validate", str(QUICKSTART), "model.pretrained=dsharp-mni"]
    )
    assert result.exit_code == 2, result.output
    assert (
        "model.pretrained: 'dsharp-mni' is neither a built-in model nor a folder; did you mean "
        "'dsharp-mini'?"
    ) in result.stderr


def test_a_valid_hub_id_is_not_refused_by_its_name() -> None:
    from dsharp.model_names import missing_model

    assert missing_model("CompVis/stable-diffusion-v1-4") is None
    assert missing_model("org/name.git") is not None  # huggingface_hub's rule, not ours


def test_the_offline_cache_check_says_an_invalid_hub_id_is_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dsharp.model_names import offline_uncached_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not a local folder, a built-in model or a valid" in offline_uncached_model("a b/c")
    assert "not in the local Hugging Face cache" in offline_uncached_model("org/uncached-x")


def test_a_model_path_under_an_unknown_users_home_is_not_found_not_a_crash():
    """``~nouser/sd``: Python cannot expand it and raised "Could not determine home
    directory"; the folder is simply not there."""
    from dsharp.hub import looks_local
    from dsharp.model_names import missing_model

    assert missing_model("~dsharp-no-such-user/sd") == (
        "model folder not found: ~dsharp-no-such-user/sd"
    )
    assert looks_local("~dsharp-no-such-user/sd")


def test_a_run_of_a_hub_base_at_a_revision_cached_alone_is_not_refused_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eval``/``sample --checkpoint RUN`` whose recipe names ``org/tiny`` at revision v1,
    only v1 cached and HF_HUB_OFFLINE set: the base loads from the cache, but the check
    before it looked for main and refused the run as not cached."""
    from huggingface_hub import constants

    from dsharp.commands.errors import _run_base_offline_uncached

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    checkpoint.mkdir(parents=True)
    for revision, refused in (("v1", False), (commit, False), ("v2", True)):
        (tmp_path / "run" / "recipe.yaml").write_text(
            f"model: {{pretrained: org/tiny, revision: {revision}}}\n"
        )
        problem = _run_base_offline_uncached(checkpoint)
        assert (problem is not None) == refused, (revision, problem)

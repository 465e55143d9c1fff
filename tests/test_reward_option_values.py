"""The model rewards' option values that need no weights to judge (a name that is no string,
a ``scale`` that is no number > 0, a ``device`` that is no torch device) are refused by the
early check, in the factory's words, so ``recipes validate`` and ``train`` say it before any
model loads; and a refusal names its reward once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.config import RewardSpec
from dsharp.hub import error_line
from dsharp.rewards import plugins
from dsharp.rewards.base import RewardError

REPO = Path(__file__).resolve().parents[1]

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("clip", {"scale": "abc"}, "clip reward option 'scale' must be a finite number, got 'abc'"),
    ("clip", {"scale": -1}, "clip reward option 'scale' must be > 0, got -1"),
    ("hpsv2", {"scale": 0}, "hpsv2 reward option 'scale' must be > 0, got 0"),
    (
        "clip",
        {"device": "tpu"},
        "clip reward option 'device' must be 'auto' or a torch device, got 'tpu'",
    ),
    ("clip", {"model": 3}, "clip reward option 'model' must be a non-empty string, got 3"),
    (
        "imagereward",
        {"checkpoint_file": [1]},
        "imagereward reward option 'checkpoint_file' must be a non-empty string, got [1]",
    ),
    (
        "aesthetic",
        {"weights": "x.pth", "weights_file": ""},
        "aesthetic reward option 'weights_file' must be a non-empty string, got ''",
    ),
]


@pytest.mark.parametrize(("reward", "options", "said"), BAD_VALUES)
def test_the_early_check_refuses_what_the_factory_refuses_in_its_words(
    reward: str, options: dict[str, Any], said: str
) -> None:
    """Before: the early check looked at paths only, and these failed at the build."""
    check = plugins.get_reward_info(reward).check_options
    with pytest.raises(ValueError) as early:
        check(options)
    assert str(early.value) == said
    factory = plugins.get_reward_info(reward).factory
    with pytest.raises(ValueError) as built:  # the factory refuses it first too: no load
        factory(**options)
    assert str(built.value) == said


def test_a_device_this_machine_lacks_is_left_to_the_machine_that_runs() -> None:
    """A recipe may be checked on a machine without CUDA and run on one with it."""
    check = plugins.get_reward_info("clip").check_options
    check({"device": "cuda:3"})
    check({"device": "auto", "scale": 100})


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("scale=abc", "clip reward option 'scale' must be a finite number, got 'abc'"),
        ("device=tpu", "clip reward option 'device' must be 'auto' or a torch device"),
    ],
)
def test_recipes_validate_refuses_a_bad_value_of_a_model_reward(
    option: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "ok: recipes/rlhf_clip.yaml", and the run failed once the model had loaded."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["recipes", "validate", "recipes/rlhf_clip.yaml", f"rewards.0.options.{option}"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"recipes/rlhf_clip.yaml: rewards.0.options: {said}"), line


def test_rewards_score_names_the_reward_once_and_exits_2_for_a_bad_value(tmp_path: Path) -> None:
    """Before: "error: reward 'clip': clip reward option 'scale' ...", exit 1 (a failure,
    where a bad setting exits 2)."""
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    args = ["rewards", "score", "clip", str(image), "--prompt", "x", "--set", "scale=abc"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, done.output
    assert done.stderr.strip() == (
        "error: clip reward option 'scale' must be a finite number, got 'abc'"
    )


def test_a_factorys_refusal_that_names_its_reward_is_not_named_again() -> None:
    """A factory's ValueError past the early check: "reward 'hpsv2': hpsv2 reward option"."""
    spec = RewardSpec(name="hpsv2", options={"resize_mode": "sideways"})
    with pytest.raises(RewardError) as error:
        plugins.build_reward(spec)
    assert str(error.value).startswith("hpsv2 reward option 'resize_mode' must be one of")


def test_rewards_score_says_1_image_not_1_images(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    args = ["rewards", "score", "shapes", str(image), "--prompt", "a", "--prompt", "b"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stderr.strip() == "error: got 2 prompts for 1 image: give 1 or one each"


def test_an_essay_of_an_error_is_cut_where_asked() -> None:
    line = error_line(ValueError("word " * 400), limit=300)
    assert len(line) == 300 and line.endswith("...") and line.startswith("ValueError: word")
    assert error_line(ValueError("short")) == "ValueError: short"


def test_clip_weights_that_are_no_checkpoint_are_one_short_line(tmp_path: Path) -> None:
    """Before: torch's weights_only refusal, 900 characters, on the one line."""
    from dsharp.testing import tiny_rewards

    options = tiny_rewards.make_tiny_open_clip(tmp_path / "clip")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    spec = RewardSpec(name="clip", options={**options, "pretrained": str(text), "device": "cpu"})
    with pytest.raises(RewardError) as error:
        plugins.build_reward(spec)
    message = str(error.value)
    assert "cannot load open_clip model" in message and "\n" not in message
    assert len(message) < 300 + len(str(text)) + len(options["model"]) + 100, message

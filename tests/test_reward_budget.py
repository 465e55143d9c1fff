"""Reward-evaluation counting: the budget Table 1 holds equal across methods.

Counts must be what the rewards ran: each check compares the logged count with the calls a
recording fake reward actually received.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsharp.config import RewardSpec, load_recipe
from dsharp.generate import SampleSettings, generate
from dsharp.io import read_jsonl
from dsharp.models import load_model
from dsharp.report import flatten_result, train_reward_evals
from dsharp.rewards.base import RewardImages
from dsharp.rewards.combine import CombinedReward
from fake_rewards import NAME, BrightnessReward, brightness_registered

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _images(n: int) -> RewardImages:
    return RewardImages(torch.rand(n, 3, 8, 8))


def _scored(calls) -> int:
    return sum(len(c["metadata"]) for c in calls)


def test_combined_reward_counts_images_once_and_through_its_components():
    specs = [RewardSpec(name="shapes"), RewardSpec(name="shapes", weight=0.5)]
    combined = CombinedReward(specs, rewards=[BrightnessReward(), BrightnessReward()])
    assert combined.evaluations == 0
    combined(_images(3), ["p"] * 3, [{}] * 3)
    combined(_images(2), ["p"] * 2, [{}] * 2)
    assert combined.evaluations == 5  # both components scored each image: counted once
    # a method that calls one component itself (iterpo does) is counted too
    combined.rewards[0](_images(4), ["p"] * 4, [{}] * 4)
    assert combined.evaluations == 9
    assert combined.rewards[0].differentiable is False  # attributes pass through


def _train(tmp_path: Path, name: str, tiny_sd_dir, *overrides: str) -> list[dict]:
    from dsharp import engine

    out = tmp_path / name
    recipe = load_recipe(
        RECIPES / "tiny" / f"{name}.yaml",
        [f"model.pretrained={tiny_sd_dir}", f"output_dir={out}", *overrides],
    )
    engine.train(recipe, progress=False)
    return read_jsonl(out / "metrics.jsonl")


@pytest.mark.slow
def test_training_logs_the_cumulative_reward_evaluations_it_ran(tiny_sd_dir, tmp_path):
    small = ("train.batch_size=1", "method.n=2", "train.max_steps=2", f"rewards.0.name={NAME}")
    with brightness_registered() as calls:
        rows = _train(tmp_path, "rlhf_sharpening", tiny_sd_dir, *small)
        per_step = [_scored(calls[:k]) for k in range(len(calls) + 1)]
        total = _scored(calls)
    counts = [r["reward_evals"] for r in rows]
    assert counts[-1] == total > 0
    assert counts[0] in per_step and 0 < counts[0] < counts[1]  # cumulative, step by step
    assert train_reward_evals(tmp_path / "rlhf_sharpening") == counts[-1]


def test_an_evaluation_of_a_checkpoint_counts_the_budget_spent_up_to_it(tmp_path):
    """A run that trained on after eval-final.json was written spent more than those
    images cost; the evaluation's own step says how much it had spent."""
    from dsharp.report import with_train_reward_evals

    rows = [{"step": s, "reward_evals": 16 * s} for s in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert with_train_reward_evals({"step": 2}, tmp_path)["train_reward_evals"] == 32
    assert with_train_reward_evals({}, tmp_path)["train_reward_evals"] == 64
    assert with_train_reward_evals({"train_reward_evals": 5}, tmp_path)["train_reward_evals"] == 5
    # a checkpoint off the logging grid (log_every 2, a Ctrl-C at step 3): its own count
    (tmp_path / "checkpoints" / "step-000003").mkdir(parents=True)
    state = {"step": 3, "reward_evals": 48}
    (tmp_path / "checkpoints" / "step-000003" / "trainer_state.json").write_text(json.dumps(state))
    rows = [r for r in rows if r["step"] % 2 == 0]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert with_train_reward_evals({"step": 3}, tmp_path)["train_reward_evals"] == 48
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n42\n{"step": 2}\n')  # damaged
    assert "train_reward_evals" not in with_train_reward_evals({"step": 3}, tmp_path)


def test_a_run_without_reward_evaluations_reports_none(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    assert train_reward_evals(tmp_path) is None
    assert train_reward_evals(tmp_path / "missing") is None


@pytest.fixture(scope="module")
def model(tiny_sd_dir):
    return load_model(str(tiny_sd_dir))


@pytest.mark.parametrize(
    ("method", "options", "per_image"),
    [
        ("inference_scaling", {"N": 3}, 3),  # N full samples, each scored once
        ("free2guide", {"candidates": 3, "guided_steps": 2}, 6),  # 3 candidates x 2 steps
        ("demon", {"K": 2, "estimate": "tweedie"}, None),  # K per step: checked against calls
    ],
)
def test_search_reports_the_reward_evaluations_per_image(model, method, options, per_image):
    settings = SampleSettings(method, 3, 5.0, 0.0, 64, 64, options=options, reward=NAME)
    with brightness_registered() as calls:
        result = generate(model, ["a", "b"], [0, 1], settings)
        ran = _scored(calls)
    assert result.reward_evals_per_image == ran / 2
    if per_image is not None:
        assert result.reward_evals_per_image == per_image


def test_plain_sampling_spends_no_reward_evaluations(model):
    result = generate(model, ["a"], [0], SampleSettings("default", 3, 5.0, 0.0, 64, 64))
    assert result.reward_evals_per_image is None


def test_table_column_adds_training_and_search_budgets():
    assert flatten_result({"overall": 0.5, "train_reward_evals": 96})["reward evals (total)"] == 96
    searched = {"overall": 0.5, "n_images": 10, "reward_evals_per_image": 2.5}
    assert flatten_result(searched)["reward evals (total)"] == 25
    assert "reward evals (total)" not in flatten_result({"overall": 0.5})

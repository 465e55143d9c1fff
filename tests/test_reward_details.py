"""HPSv2 preprocesses with its own resize mode, and a combined reward counts an image as
missing once, when its total is missing."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from dsharp.config import RewardSpec
from dsharp.rewards.base import RewardImages
from dsharp.rewards.combine import CombinedReward
from dsharp.testing import tiny_rewards

PROMPTS = ["a green bench and a blue bowl", "a red apple"]


@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return tiny_rewards.make_tiny_hpsv2(tmp_path_factory.mktemp("hps"))


def _wide_pixels() -> torch.Tensor:
    """Two 32x64 images, different in their left, middle and right thirds."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 3, 32, 64, generator=g)
    pixels[:, 0, :, :16] = 1.0
    pixels[:, 2, :, 48:] = 0.0
    return pixels


@pytest.mark.parametrize("mode", [None, "squash"])
def test_hpsv2_scores_a_wide_image_with_its_resize_mode(tiny_hps, mode) -> None:
    """HPSv2 pads a non-square image to a square ("longest", its default) rather
    than take the encoder's CLIP centre crop; a resize_mode option is honoured too."""
    from dsharp.rewards.hpsv2 import build_hpsv2_reward

    options = {} if mode is None else {"resize_mode": mode}
    reward = build_hpsv2_reward(**tiny_hps, device="cpu", **options)
    pixels = _wide_pixels()
    scores, _ = reward(RewardImages(pixels), PROMPTS, [{}] * 2)
    text = reward.encoder.text(PROMPTS)

    def cosine(resize_mode: str) -> torch.Tensor:
        return (reward.encoder.image(pixels, resize_mode) * text).sum(-1)

    expected = cosine(mode or "longest")
    assert reward.encoder.cfg["resize_mode"] == "shortest"  # the encoder's own default
    assert not torch.allclose(expected, cosine("shortest"), atol=1e-4)  # the test can tell
    assert torch.allclose(scores, expected, atol=1e-6)


class _Fixed:
    differentiable = False

    def __init__(self, scores: list[float]):
        self.scores = scores

    def __call__(self, images, prompts, metadata):
        return torch.tensor(self.scores), {}


def test_missing_counts_images_whose_total_is_missing_not_reward_misses() -> None:
    """info["missing"] is the number of images the methods skip (total NaN), as they log it
    in `reward_missing`. An image two rewards both missed is one image; a weight-0 reward's
    miss leaves the total alone and counts only in missing_by_reward."""
    base = {"normalize": "none", "on_error": "missing", "options": {}}
    specs = [
        RewardSpec.model_construct(**base, name="a", weight=1.0),
        RewardSpec.model_construct(**base, name="b", weight=0.5),
        RewardSpec.model_construct(**base, name="report", weight=0.0),
    ]
    rewards = [
        _Fixed([math.nan, 1.0, 1.0, 1.0]),
        _Fixed([math.nan, 2.0, 2.0, 2.0]),
        _Fixed([1.0, 1.0, math.nan, 1.0]),
    ]
    images = RewardImages(torch.rand(4, 3, 8, 8))
    total, info = CombinedReward(specs, rewards)(images, ["p"] * 4, [{}] * 4)
    assert math.isnan(total[0]) and total[1:].tolist() == [2.0, 2.0, 2.0]
    assert info["missing_by_reward"] == {"a": 1, "b": 1, "report": 1}
    assert info["missing"] == int(torch.isnan(total).sum()) == 1

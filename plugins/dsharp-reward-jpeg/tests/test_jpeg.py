"""The plugin's own tests: run with ``pytest`` from this folder (dsharp must be installed)."""

from __future__ import annotations

import io

import dsharp_reward_jpeg
import pytest
import torch

from dsharp.rewards import RewardError, RewardImages
from dsharp.rewards.plugins import make_plugin_manager


def test_score_is_minus_the_jpeg_size_in_kb() -> None:
    generator = torch.Generator().manual_seed(0)
    noisy = torch.rand(1, 3, 64, 64, generator=generator)
    flat = torch.full((1, 3, 64, 64), 0.5)
    images = RewardImages(torch.cat([flat, noisy]))
    scores, info = dsharp_reward_jpeg.build_jpeg_reward()(images, ["p", "p"], [{}, {}])
    assert scores.dtype == torch.float32 and scores.shape == (2,)
    buffer = io.BytesIO()
    images.pil[1].save(buffer, format="JPEG", quality=95)
    assert scores[1].item() == pytest.approx(-len(buffer.getvalue()) / 1000.0)
    assert scores[0] > scores[1]  # a flat image compresses far better than noise
    assert info["jpeg_kb"] == pytest.approx([-s for s in scores.tolist()])


def test_registers_through_the_dsharp_hook() -> None:
    manager = make_plugin_manager()
    manager.register(dsharp_reward_jpeg, name="jpeg")
    manager.check_pending()  # the hook name matches dsharp's specification
    registered = []
    manager.hook.register_rewards(register=registered.append)
    assert [info.name for info in registered] == ["jpeg_compressibility"]
    assert registered[0].factory is dsharp_reward_jpeg.build_jpeg_reward


def test_bad_quality_is_a_clear_error() -> None:
    with pytest.raises(RewardError, match="option 'quality': expected an integer 1-100, got 101"):
        dsharp_reward_jpeg.build_jpeg_reward(quality=101)


def test_a_bad_quality_is_refused_without_building_the_reward() -> None:
    """``check_options`` lets dsharp refuse the value before any model loads (exit 2)."""
    with pytest.raises(ValueError, match="option 'quality': expected an integer 1-100, got 800"):
        dsharp_reward_jpeg.check_jpeg_options({"quality": 800})
    dsharp_reward_jpeg.check_jpeg_options({})  # the default is fine

"""A deterministic fake reward for tests, registered through the real plugin manager.

``test_brightness`` scores an image by its mean pixel value: cheap, exact, and different for
practically every sample, so best/worst selections never tie.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dsharp.rewards import plugins
from dsharp.rewards.base import RewardInfo
from dsharp.rewards.hookspecs import hookimpl

NAME = "test_brightness"
PLUGIN = "test-brightness-plugin"


class BrightnessReward:
    """Mean pixel value of each image.

    ``nan_trajectory`` / ``nan_prompt``: score NaN for that trajectory index (from the
    metadata the methods attach) or that prompt, to simulate samples a reward cannot score;
    ``nan_sample_trajectory``: the same, but only where no trajectory step is named (the
    online samples themselves, not their trajectories' predictions); ``constant_prompt``:
    score every image of that prompt 0.5, so that its trajectories tie.
    Every call is recorded in the class-level ``calls`` list.
    """

    differentiable = False
    calls: list[dict[str, Any]] = []

    def __init__(
        self,
        nan_trajectory: int = -1,
        nan_prompt: str = "",
        nan_sample_trajectory: int = -1,
        constant_prompt: str = "",
        on_error: str = "raise",
    ):
        self.nan_trajectory, self.nan_prompt, self.on_error = nan_trajectory, nan_prompt, on_error
        self.nan_sample_trajectory = nan_sample_trajectory
        self.constant_prompt = constant_prompt

    def __call__(self, images, prompts, metadata):
        scores = images.tensor.float().mean(dim=(1, 2, 3))
        for i, (prompt, meta) in enumerate(zip(prompts, metadata, strict=True)):
            if prompt == self.constant_prompt:
                scores[i] = 0.5
            if meta.get("trajectory") == self.nan_trajectory or prompt == self.nan_prompt:
                scores[i] = float("nan")
            if "trajectory_step" not in meta and meta.get("trajectory") == (
                self.nan_sample_trajectory
            ):
                scores[i] = float("nan")
        BrightnessReward.calls.append(
            {"scores": scores.clone(), "prompts": list(prompts), "metadata": list(metadata)}
        )
        return scores, {}


class BrightnessPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name=NAME, factory=BrightnessReward, description="mean pixel value"))


def register() -> None:
    """Register the plugin with the real manager (for processes that end right after)."""
    plugins.load_plugins()
    plugins.pm.register(BrightnessPlugin(), name=PLUGIN)


@contextmanager
def brightness_registered() -> Iterator[list[dict[str, Any]]]:
    """Register the plugin; yield the list of recorded calls; unregister after."""
    register()
    BrightnessReward.calls.clear()
    try:
        yield BrightnessReward.calls
    finally:
        plugins.pm.unregister(name=PLUGIN)
        BrightnessReward.calls.clear()


FLAKY = "test_flaky_verifier"
FLAKY_PLUGIN = "test-flaky-verifier-plugin"


class FlakyVerifier(BrightnessReward):
    """Brightness, but NaN (could not score) where ``unscored(metadata, raw)`` says, ``raw``
    being the call's brightness scores: a flaky grader used as a verifier, which `dsharp
    sample` gives no options to, so a test sets ``FlakyVerifier.unscored`` itself. Every
    call's brightness before the NaNs is recorded in ``raw_calls``."""

    unscored: Any = staticmethod(lambda meta, raw: [False] * len(raw))
    raw_calls: list[list[float]] = []

    def __call__(self, images, prompts, metadata):
        raw = images.tensor.float().mean(dim=(1, 2, 3))
        FlakyVerifier.raw_calls.append(raw.tolist())
        lost = torch.tensor(type(self).unscored(list(metadata), raw.tolist()), dtype=torch.bool)
        return raw.masked_fill(lost.to(raw.device), float("nan")), {}


class FlakyPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name=FLAKY, factory=FlakyVerifier, description="flaky verifier"))


@contextmanager
def flaky_registered(unscored) -> Iterator[list[list[float]]]:
    """Register ``test_flaky_verifier`` with ``unscored(metadata, raw) -> [bool]``; yield the
    recorded raw scores of each call; unregister after."""
    plugins.load_plugins()
    plugins.pm.register(FlakyPlugin(), name=FLAKY_PLUGIN)
    FlakyVerifier.unscored = staticmethod(unscored)
    FlakyVerifier.raw_calls = []
    try:
        yield FlakyVerifier.raw_calls
    finally:
        plugins.pm.unregister(name=FLAKY_PLUGIN)
        FlakyVerifier.unscored = staticmethod(lambda meta, raw: [False] * len(raw))

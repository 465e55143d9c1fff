"""Exact reward-evaluation counting: how many images a method had scored.

Table 1 compares methods at the same budget of reward evaluations, so the count must be
what the rewards actually ran, not what a method says it spent. :class:`CountingReward`
wraps one built reward and adds the batch size of every call; everything else (``differentiable``,
options, helpers) passes through to the wrapped reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsharp.rewards.base import RewardImages


class CountingReward:
    """A built reward that counts the images it is asked to score (``images``)."""

    def __init__(self, reward: Any):
        self.wrapped = reward
        self.images = 0

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> Any:
        self.images += len(images)
        return self.wrapped(images, prompts, metadata)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this wrapper lacks: the wrapped reward answers them.
        if name == "wrapped":  # not yet set (e.g. during unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)

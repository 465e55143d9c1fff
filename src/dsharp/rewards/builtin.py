"""The rewards that ship with dsharp, registered through the same hook as any plugin."""

from __future__ import annotations

from collections.abc import Callable

from dsharp.rewards.base import RewardInfo
from dsharp.rewards.hookspecs import hookimpl
from dsharp.rewards.plugins import lazy_factory


@hookimpl
def register_rewards(register: Callable[[RewardInfo], None]) -> None:
    """Register the built-in rewards; each factory imports its module only when built."""
    register(
        RewardInfo(
            name="shapes",
            factory=lazy_factory("dsharp.shapes.reward", "build_shapes_reward"),
            description="Exact compositional score for the dsharp-mini shapes world",
            differentiable=False,
        )
    )
    register(
        RewardInfo(
            name="mllm",
            factory=lazy_factory("dsharp.rewards.mllm", "build_mllm_reward"),
            description="Multimodal LLM grader on an OpenAI-compatible server: overall / 10 "
            "over the paper's five aspects",
            differentiable=False,
        )
    )

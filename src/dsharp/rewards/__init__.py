"""Rewards: the contract (``base``), the plugin layer (``hookspecs``, ``plugins``), built-ins.

Names are re-exported lazily so that ``import dsharp.rewards.hookspecs`` stays cheap while
plugin authors can still write ``from dsharp.rewards import hookimpl, RewardInfo``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Reward": "dsharp.rewards.base",
    "RewardError": "dsharp.rewards.base",
    "RewardImages": "dsharp.rewards.base",
    "RewardInfo": "dsharp.rewards.base",
    "hookimpl": "dsharp.rewards.hookspecs",
    "hookspec": "dsharp.rewards.hookspecs",
    "build_reward": "dsharp.rewards.plugins",
    "get_reward_info": "dsharp.rewards.plugins",
    "lazy_factory": "dsharp.rewards.plugins",
    "plugin_failures": "dsharp.rewards.plugins",
    "reward_registry": "dsharp.rewards.plugins",
    "CombinedReward": "dsharp.rewards.combine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dsharp.rewards' has no attribute {name!r}")

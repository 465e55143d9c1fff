"""Pluggy markers and hook specifications of the ``dsharp`` plugin project.

A plugin is a module (or object) with ``@hookimpl`` functions, exposed through an entry
point in the ``dsharp`` group::

    [project.entry-points.dsharp]
    my_rewards = "my_package.dsharp_plugin"

and it registers rewards through a callback, so one plugin can register several::

    from dsharp.rewards import RewardInfo, hookimpl

    @hookimpl
    def register_rewards(register):
        register(RewardInfo(name="my_reward", factory=build_my_reward, description="..."))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from dsharp.rewards.base import RewardInfo

PROJECT = "dsharp"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_rewards(register: Callable[[RewardInfo], None]) -> None:
    """Register rewards by calling ``register(RewardInfo(...))`` once per reward.

    Keep this cheap: build nothing here. Heavy imports belong in the factory, which runs
    only when a recipe or command actually uses the reward.
    """

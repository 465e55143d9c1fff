"""Test helper for tests/test_distributed.py: ``dsharp train`` in each process of a launch,
with the reward ``test_fails_on_rank_1``, which raises (a fault, whatever ``on_error``
says) on the process of rank 1 only, so the other process is left waiting for it in a
collective. Usage: ``dist_fault_worker.py RECIPE [key=value ...]``."""

from __future__ import annotations

import os
import sys

from dsharp.rewards import plugins
from dsharp.rewards.base import RewardInfo
from dsharp.rewards.hookspecs import hookimpl
from fake_rewards import BrightnessReward


class FailsOnRankOne(BrightnessReward):
    def __call__(self, images, prompts, metadata):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("injected fault on rank 1")
        return super().__call__(images, prompts, metadata)


class FaultPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(RewardInfo(name="test_fails_on_rank_1", factory=FailsOnRankOne, description="x"))


def main() -> None:
    plugins.load_plugins()
    plugins.pm.register(FaultPlugin(), name="test-fault-plugin")
    from dsharp.cli import main as dsharp_main

    sys.argv = ["dsharp", "train", *sys.argv[1:]]
    dsharp_main()


if __name__ == "__main__":
    main()

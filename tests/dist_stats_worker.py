"""Test helper for tests/test_distributed.py: each of two processes adds its own rewards of
the prompt "a" to a :class:`PromptStatTracker`, normalises one sample of a prompt of its own
over the round (:func:`round_advantages`), and writes its advantages and buffers to
``OUT_DIR/stats{rank}.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from dsharp.methods.ddpo import round_advantages
from dsharp.methods.prompt_stats import PromptStatTracker


def main() -> None:
    out = Path(sys.argv[1])
    state = PartialState(cpu=True)  # as the engine's Accelerator starts it
    rank = state.process_index
    tracker = PromptStatTracker(buffer_size=8, min_count=4)
    rewards = torch.tensor([1.0, 3.0]) if rank == 0 else torch.tensor([5.0, 7.0])
    advantages = tracker.advantages(rewards, ["a", "a"]).tolist()
    # without a buffer: one sample of a prompt of its own per process ({1} and {5})
    alone = round_advantages(rewards[:1], [f"only on {rank}"]).tolist()
    report = {"advantages": advantages, "state": tracker.state_dict(), "alone": alone}
    (out / f"stats{rank}.json").write_text(json.dumps(report))
    # leave together: a process that exits while the other still talks to it aborts
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main()

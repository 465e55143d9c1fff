"""Per-prompt reward statistics pooled across rounds, for DDPO's advantages.

ddpo-pytorch normalises a sample's reward by the mean and std of its prompt's last
``buffer_size`` rewards, once at least ``min_count`` are held, and by the whole round's
otherwise. With few samples per prompt and round this is steadier than the round's own
statistics (with ``n = 2`` those make every advantage +1 or -1). The round is gathered across
processes before the update, as ddpo-pytorch does, so every process holds the same buffers
and the checkpoint (written by the main process) serves all of them on resume.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

#: Gathers a process's ``(prompts, rewards)`` lists into the whole round's (all processes).
Gather = Callable[[list[str], list[float]], tuple[list[str], list[float]]]


def gather_round(prompts: list[str], rewards: list[float]) -> tuple[list[str], list[float]]:
    """Every process's prompts and rewards, in process order (one process: the inputs)."""
    from accelerate.state import PartialState
    from accelerate.utils import gather_object

    if PartialState().num_processes == 1:
        return prompts, rewards
    pairs = gather_object(list(zip(prompts, rewards, strict=True)))
    return [p for p, _ in pairs], [r for _, r in pairs]


#: Gathers a process's items into every process's, in process order, with the index where
#: this process's begin.
GatherAll = Callable[[list[Any]], tuple[list[Any], int]]


def gather_with_offset(items: list[Any]) -> tuple[list[Any], int]:
    """Every process's ``items`` in process order, and where this process's start (one
    process: the inputs and 0)."""
    from accelerate.state import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return items, 0
    lists = gather_object([items])  # one list per process
    start = sum(len(part) for part in lists[: state.process_index])
    return [item for part in lists for item in part], start


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std(correction=0))


class PromptStatTracker:
    """Each prompt's last ``buffer_size`` scored rewards; see the module docstring."""

    def __init__(self, buffer_size: int, min_count: int, eps: float = 1e-6):
        if buffer_size < 1 or not 1 <= min_count <= buffer_size:
            raise ValueError(
                f"need 1 <= min_count <= buffer_size, got {min_count} and {buffer_size}"
            )
        self.buffer_size, self.min_count, self.eps = buffer_size, min_count, eps
        self.buffers: dict[str, deque[float]] = {}

    def advantages(
        self, rewards: torch.Tensor, prompts: Sequence[str], gather: Gather = gather_round
    ) -> torch.Tensor:
        """Advantages ``(N,)`` of this process's samples after adding the whole round to the
        buffers. NaN rewards (unscored samples) get NaN and enter no statistic."""
        if rewards.ndim != 1 or rewards.numel() != len(prompts):
            raise ValueError(f"got {rewards.numel()} rewards for {len(prompts)} prompts")
        local = [float(r) for r in rewards.tolist()]
        scored = [(p, r) for p, r in zip(prompts, local, strict=True) if r == r]
        all_prompts, all_rewards = gather([p for p, _ in scored], [r for _, r in scored])
        out = torch.full((len(local),), float("nan"))
        if not all_rewards:
            return out
        for prompt, reward in zip(all_prompts, all_rewards, strict=True):
            self.buffers.setdefault(prompt, deque(maxlen=self.buffer_size)).append(reward)
        round_stats = _mean_std(all_rewards)
        stats: dict[str, tuple[float, float]] = {}
        for i, (prompt, reward) in enumerate(zip(prompts, local, strict=True)):
            if reward != reward:
                continue
            if prompt not in stats:
                held = self.buffers[prompt]
                stats[prompt] = _mean_std(held) if len(held) >= self.min_count else round_stats
            mean, std = stats[prompt]
            out[i] = (reward - mean) / (std + self.eps)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The buffers as JSON values (prompt -> rewards, oldest first)."""
        return {"buffers": {p: list(b) for p, b in self.buffers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        buffers = state.get("buffers", {})
        if not isinstance(buffers, Mapping):
            raise ValueError("method_state.buffers: expected a mapping of prompt to rewards")
        self.buffers = {
            str(p): deque((float(r) for r in values), maxlen=self.buffer_size)
            for p, values in buffers.items()
        }

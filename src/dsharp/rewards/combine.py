"""Several rewards as one: per-reward normalisation and weights, and honest missing values.

The total for a sample is ``sum_i weight_i * normalise_i(score_i)``. A component that could
not score a sample (NaN) makes that sample's total NaN: methods skip such samples rather
than train on an invented score. A weight of 0 keeps a reward for reporting only: its raw
scores appear in ``info`` but it never touches the total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import torch

from dsharp.rewards.base import Reward, RewardError, RewardImages, UnscoredError
from dsharp.rewards.counting import CountingReward

if TYPE_CHECKING:
    from dsharp.config import RewardSpec

STD_FLOOR = 1e-6


def batch_zscore(scores: torch.Tensor) -> torch.Tensor:
    """``(s - mean) / max(std, 1e-6)`` over the batch's non-NaN entries (population std)."""
    valid = ~torch.isnan(scores)
    if not bool(valid.any()):
        return scores
    present = scores[valid]
    mean = present.mean()
    std = present.std(correction=0).clamp_min(STD_FLOOR)
    return (scores - mean) / std


def without_autocast(device: torch.device) -> ExitStack:
    """Autocast off (on ``device``'s type and the CPU) while a reward scores: training steps
    run under ``train.mixed_precision``'s autocast, and a reward model scoring in bf16 or
    fp16 rounds its scores to about three digits, more than the differences between the
    trajectories a method ranks, so the ranking followed the rounding. A reward scores in
    its own weights' dtype, as it does when ``dsharp eval`` scores."""
    stack = ExitStack()
    for kind in dict.fromkeys((device.type, "cpu")):
        if torch.is_autocast_enabled(kind):
            stack.enter_context(torch.autocast(kind, enabled=False))
    return stack


def _as_list(scores: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in scores.detach().float().cpu().tolist()]


def _described(value: Any) -> str:
    """``a Tensor of shape (2,)``, ``a tuple of 3``: what a reward returned, in a message."""
    if isinstance(value, torch.Tensor):
        return f"a Tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


def _source(spec: RewardSpec) -> str:
    """`` (plugin 'p', distribution d 1.0)`` for a third-party reward, for a fault of its
    code: the reward's name alone may not say which installed package to blame."""
    from dsharp.rewards.plugins import reward_source

    try:
        return reward_source(spec.name)
    except Exception:  # a name no plugin registers (a reward built by the caller): say less
        return ""


def _component_keys(specs: Sequence[RewardSpec]) -> list[str]:
    """Reward names, with ``#1``, ``#2`` ... on repeats so each component has its own key."""
    seen: dict[str, int] = {}
    keys = []
    for spec in specs:
        count = seen.get(spec.name, 0)
        keys.append(spec.name if count == 0 else f"{spec.name}#{count}")
        seen[spec.name] = count + 1
    return keys


class CombinedReward:
    """The weighted sum of several built rewards; itself a :class:`Reward`.

    ``info`` holds ``raw`` (each reward's unnormalised scores, NaN as ``None``), ``missing``
    (how many totals are NaN), ``missing_by_reward``, and each reward's own ``info``.
    :attr:`evaluations` counts the images scored, also through a component called directly.
    """

    def __init__(self, specs: Sequence[RewardSpec], rewards: Sequence[Reward] | None = None):
        """Build each spec's reward through the plugin registry, or use ``rewards`` (one per
        spec, already built: tests and callers that build rewards themselves)."""
        if not specs:
            raise ValueError("CombinedReward needs at least one reward")
        if rewards is None:
            from dsharp.rewards.plugins import build_reward

            rewards = [build_reward(spec) for spec in specs]
        if len(rewards) != len(specs):
            raise ValueError(f"got {len(rewards)} rewards for {len(specs)} specs")
        self.specs = list(specs)
        self.rewards = [CountingReward(r) for r in rewards]
        self.keys = _component_keys(self.specs)
        self.differentiable = all(getattr(r, "differentiable", False) for r in self.rewards)

    @property
    def evaluations(self) -> int:
        """Images scored so far (an image every component scored counts once)."""
        return max(r.images for r in self.rewards)

    def score_component(
        self,
        key: str,
        spec: RewardSpec,
        reward: Reward,
        images: RewardImages,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """One component's scores ``(B,)`` with every check training applies (``on_error``,
        shape, NaN and inf, a plugin's own exception named), unweighted. Gradients flow
        through: IterPO calls it per component to back-propagate through each reward."""
        batch, device = len(images), images.tensor.device
        try:
            with without_autocast(device):
                result = reward(images, prompts, metadata)
        except RewardError as e:  # the reward could not score these samples
            if spec.on_error == "raise":
                raise UnscoredError(f"reward {key!r}: {e}", key) from e
            message = " ".join(str(e).split())
            return torch.full((batch,), math.nan, device=device), {"error": message}
        except Exception as e:
            # Any other exception is a fault in the reward, not a sample it could not score:
            # it stops the run whatever on_error says, naming the reward and the error's type.
            text = " ".join(str(e).split())
            raise RewardError(
                f"reward {key!r}{_source(spec)} failed: {type(e).__name__}: {text}"
            ) from e
        if not isinstance(result, tuple | list) or len(result) != 2:  # else unpacking misleads
            raise RewardError(
                f"reward {key!r}{_source(spec)} returned {_described(result)}, expected a "
                "(scores, info) tuple"
            )
        scores, info = result
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (batch,):
            raise RewardError(
                f"reward {key!r}{_source(spec)} returned scores as {_described(scores)}, "
                f"expected a tensor of shape ({batch},)"
            )
        if info is not None and not isinstance(info, Mapping):
            raise RewardError(
                f"reward {key!r}{_source(spec)} returned info of type {type(info).__name__}"
            )
        scores = scores.to(
            device=device, dtype=scores.dtype if scores.is_floating_point() else torch.float32
        )
        infinite = int(torch.isinf(scores).sum())
        if infinite:  # no score to rank or average: as unscorable as NaN
            if spec.on_error == "raise":
                raise UnscoredError(f"reward {key!r} returned inf for {infinite} sample(s)", key)
            scores = scores.masked_fill(torch.isinf(scores), math.nan)
        nans = int(torch.isnan(scores).sum())
        if nans and spec.on_error == "raise":
            raise UnscoredError(
                f"reward {key!r} returned NaN for {nans} sample(s) but its on_error is 'raise'",
                key,
            )
        return scores, dict(info or {})

    def __call__(
        self,
        images: RewardImages,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = len(images)
        if len(prompts) != batch or len(metadata) != batch:
            raise ValueError(
                f"got {batch} images, {len(prompts)} prompts and {len(metadata)} metadata dicts"
            )
        total = torch.zeros(batch, device=images.tensor.device)
        raw: dict[str, list[float | None]] = {}
        missing_by_reward: dict[str, int] = {}
        infos: dict[str, dict[str, Any]] = {}
        for key, spec, reward in zip(self.keys, self.specs, self.rewards, strict=True):
            scores, info = self.score_component(key, spec, reward, images, prompts, metadata)
            raw[key] = _as_list(scores)
            missing_by_reward[key] = int(torch.isnan(scores).sum())
            infos[key] = info
            if spec.weight == 0:
                continue
            normed = batch_zscore(scores) if spec.normalize == "batch_zscore" else scores
            total = total + spec.weight * normed.to(total.dtype)
        info = {
            "raw": raw,
            "missing": int(torch.isnan(total).sum()),
            "missing_by_reward": missing_by_reward,
            "rewards": infos,
        }
        return total, info

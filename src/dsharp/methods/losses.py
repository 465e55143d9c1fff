"""Losses and selection rules as plain functions of tensors (no models), so each can be
checked against hand-computed values.

Shapes: ``B`` prompts, ``n`` trajectories per prompt (flattened prompt-major: sample
``i * n + k`` is trajectory ``k`` of prompt ``i``), ``m`` trajectory steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsharp.step_metrics import Mean


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> Mean:
    """Mean of ``values`` where ``mask`` holds, NaN where it holds nowhere: a metric of the
    pairs or prompts a loss trained on, logged on every step (with how many it is over, by
    which the engine pools it with the other batches')."""
    count = int(mask.sum().item())
    return Mean(values[mask].float().mean().item() if count else float("nan"), count)


def nan_mean(values: torch.Tensor) -> Mean:
    """Mean of the values that are not NaN (rewards: NaN marks an unscored sample)."""
    return masked_mean(values, ~torch.isnan(values))


def path_rewards(step_rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Path-integral reward of each trajectory: the mean of its valid step rewards.

    ``step_rewards`` ``(m, N)``, ``valid`` bool ``(m, N)``. A NaN reward at a valid step (a
    sample the reward could not score) makes the whole trajectory NaN, so that selection
    skips it rather than trusting a partial mean. Invalid steps (past the end of the
    schedule) are ignored whatever they hold.
    """
    valid = valid.to(torch.bool)
    counts = valid.sum(0)
    if (counts == 0).any():
        raise ValueError("every trajectory needs at least one valid step")
    filled = torch.where(valid, step_rewards, torch.zeros_like(step_rewards))
    mean = filled.sum(0) / counts
    missing = (valid & torch.isnan(step_rewards)).any(0)
    return torch.where(missing, torch.full_like(mean, float("nan")), mean)


def select_per_prompt(
    returns: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best and worst trajectory of each prompt, never mixing prompts.

    ``returns`` ``(B * n,)`` prompt-major. Returns ``(best, worst, usable)``: flat indices
    ``(B,)`` into ``returns`` and a bool ``(B,)`` that is False where a prompt has no scored
    trajectory (all NaN). NaN trajectories never win or lose.
    """
    if returns.ndim != 1 or returns.numel() % n:
        raise ValueError(f"returns must be flat with a multiple of n={n} entries")
    grid = returns.view(-1, n)
    nan = torch.isnan(grid)
    best_local = torch.where(nan, torch.full_like(grid, -float("inf")), grid).argmax(1)
    worst_local = torch.where(nan, torch.full_like(grid, float("inf")), grid).argmin(1)
    offsets = torch.arange(grid.shape[0], device=returns.device) * n
    usable = (~nan).any(1)
    return offsets + best_local, offsets + worst_local, usable


def per_step_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all but the first axis: ``(N, ...) -> (N,)``."""
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)


def trajectory_errors(
    step_errors: torch.Tensor, owner: torch.Tensor, num_trajectories: int
) -> torch.Tensor:
    """Average step errors per trajectory.

    ``step_errors`` ``(S,)`` for S valid (step, trajectory) pairs; ``owner`` ``(S,)`` says
    which of ``num_trajectories`` each pair belongs to. Returns ``(num_trajectories,)``.
    """
    sums = torch.zeros(num_trajectories, dtype=step_errors.dtype, device=step_errors.device)
    sums = sums.index_add(0, owner, step_errors)
    counts = torch.bincount(owner, minlength=num_trajectories).clamp(min=1).to(step_errors.dtype)
    return sums / counts


def sft_sharpening_loss(winner_errors: torch.Tensor) -> torch.Tensor:
    """SFT Diffusion-Sharpening: regress the winning trajectory, ``mean_i L_{b_i}``.

    ``winner_errors`` ``(B,)``: each prompt's winning trajectory's mean step error.
    """
    return winner_errors.mean()


def rlhf_sharpening_loss(
    policy_best: torch.Tensor,
    policy_worst: torch.Tensor,
    ref_best: torch.Tensor,
    ref_worst: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """RLHF Diffusion-Sharpening: Diffusion-DPO form on the best/worst trajectory pair.

    ``-log sigmoid(beta * ((e_ref_b - e_ref_w) - (e_theta_b - e_theta_w)))`` per prompt,
    where every ``e`` is a trajectory's mean step error (policy and reference over the
    same steps). Returns the per-prompt losses ``(B,)``; no constant reward-margin term.
    """
    logits = beta * ((ref_best - ref_worst) - (policy_best - policy_worst))
    return -F.logsigmoid(logits)

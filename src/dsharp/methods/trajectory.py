"""Short denoising trajectories from a training timestep, and their rewards.

This is the part of Diffusion-Sharpening that looks ahead: from noisy states ``x_t`` each
trajectory takes ``m`` deterministic DDIM steps of ``stride`` timesteps, and every step's
predicted clean sample is decoded and scored. Rollouts run without gradients; the method
recomputes only the states it trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.rewards.base import RewardImages
from dsharp.sampling import DDIMTables, add_noise, ddim_step, eps_from_x0


@dataclass
class Rollout:
    """States visited by ``N`` trajectories of up to ``m`` steps.

    - ``states`` ``(m, N, C, h, w)``: the input of the UNet at step ``j``.
    - ``timesteps`` ``(m, N)`` long: timestep of step ``j`` (``t - j * stride``, clamped at 0).
    - ``valid`` ``(m, N)`` bool: step ``j`` exists for that trajectory (``t - j*stride >= 0``),
      i.e. ``j < min(m, 1 + t // stride)``.
    - ``pred_x0`` ``(m, N, C, h, w)``: the model's predicted clean sample at each step.
    - ``x0`` ``(N, C, h, w)``: the clean sample each trajectory was noised from.
    - ``noise`` ``(N, C, h, w)``: the noise that made its first state.
    """

    states: torch.Tensor
    timesteps: torch.Tensor
    valid: torch.Tensor
    pred_x0: torch.Tensor
    x0: torch.Tensor
    noise: torch.Tensor

    @property
    def m(self) -> int:
        """Steps per trajectory: the first axis of ``states`` (the paper's ``m``)."""
        return self.states.shape[0]

    def targets_at(
        self, kind: str, tables: DDIMTables, step_idx: torch.Tensor, traj_idx: torch.Tensor
    ) -> torch.Tensor:
        """Regression targets for the (step, trajectory) pairs ``(step_idx, traj_idx)``.

        ``consistent``: the noise implied by the state and its clean sample,
        ``(x_t' - sqrt(abar) x0) / sqrt(1 - abar)``, which equals the drawn noise at step 0.
        ``original``: the first step's noise at every step (the public code's choice).
        """
        if kind == "original":
            return self.noise[traj_idx]
        if kind == "consistent":
            return eps_from_x0(
                tables,
                self.states[step_idx, traj_idx],
                self.x0[traj_idx],
                self.timesteps[step_idx, traj_idx],
            )
        raise ValueError(f"unknown regression target '{kind}' (expected consistent or original)")


@torch.no_grad()
def roll_out(
    model: DiffusionModel,
    tables: DDIMTables,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    cond: Conditioning,
    m: int,
    stride: int,
) -> Rollout:
    """Noise ``x0`` to ``x_t`` with ``noise`` and take up to ``m`` DDIM (eta = 0) steps.

    Uses the conditional noise prediction (the one the loss trains). ``t`` ``(N,)`` long.
    """
    x = add_noise(tables, x0, noise, t)
    states, timesteps, valid, preds = [], [], [], []
    for j in range(m):
        t_j = t - j * stride
        ok = t_j >= 0
        t_in = t_j.clamp(min=0)
        eps = model.predict_noise(x, t_in, cond)
        out = ddim_step(tables, x, eps, t_in, t_in - stride)
        states.append(x)
        timesteps.append(t_in)
        valid.append(ok)
        preds.append(out.pred_x0)
        keep = ok.view(-1, *([1] * (x.ndim - 1)))
        x = torch.where(keep, out.prev_sample.to(x.dtype), x)
    return Rollout(
        states=torch.stack(states),
        timesteps=torch.stack(timesteps),
        valid=torch.stack(valid),
        pred_x0=torch.stack(preds),
        x0=x0,
        noise=noise,
    )


@torch.no_grad()
def decode_in_chunks(model: DiffusionModel, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Decode ``latents`` ``batch_size`` at a time (bounds the decoder's memory); an empty
    batch comes back as is."""
    if not latents.shape[0]:
        return latents
    return torch.cat([model.decode(chunk) for chunk in latents.split(batch_size)])


@torch.no_grad()
def score_rollout(
    model: DiffusionModel,
    reward: Any,
    rollout: Rollout,
    prompts: Sequence[str],
    metadata: Sequence[dict[str, Any]],
    decode_batch_size: int = 16,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Decode every valid step's predicted clean sample and score it.

    Decoding runs in chunks of ``decode_batch_size`` over all steps together; the reward
    is called once per trajectory step on that step's valid samples. Returns rewards
    ``(m, N)`` (NaN at invalid steps and where the reward marked a sample missing) and the
    reward's info for each step.
    """
    m, n_traj = rollout.valid.shape
    flat_valid = rollout.valid.flatten()
    flat_pred = rollout.pred_x0.flatten(0, 1)[flat_valid]
    images = decode_in_chunks(model, flat_pred, decode_batch_size)
    rewards = torch.full((m * n_traj,), float("nan"), device=rollout.states.device)
    infos: list[dict[str, Any]] = []
    positions = flat_valid.nonzero().flatten()
    start = 0
    for j in range(m):
        idx = rollout.valid[j].nonzero().flatten().tolist()
        if not idx:
            infos.append({})
            continue
        step_images = images[start : start + len(idx)]
        step_meta = [dict(metadata[i], trajectory_step=j) for i in idx]
        scores, info = reward(RewardImages(step_images), [prompts[i] for i in idx], step_meta)
        rewards[positions[start : start + len(idx)]] = scores.to(rewards.device, torch.float32)
        infos.append(info)
        start += len(idx)
    return rewards.view(m, n_traj), infos


def gather_steps(
    rollout: Rollout, trajectories: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat (step, trajectory) pairs of the chosen ``trajectories`` ``(K,)`` that are valid.

    Returns ``(step_index, trajectory_index, owner)`` each ``(S,)``, where ``owner`` is the
    position in ``trajectories`` that a pair belongs to: one batched UNet call then covers
    every step of every chosen trajectory.
    """
    valid = rollout.valid[:, trajectories]  # (m, K)
    step_idx, pos = valid.nonzero(as_tuple=True)
    return step_idx, trajectories[pos], pos

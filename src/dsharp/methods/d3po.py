"""D3PO (Yang et al., CVPR 2024, arXiv 2311.13231): direct preference optimisation on the
denoising MDP, without a reward model in the loss.

Per prompt, two trajectories start from the same initial noise ``x_T`` and diverge through
the stochastic DDIM steps (``eta > 0``; the authors: eta 1, 20 steps). The reward only says
which final image is preferred. At every step ``t`` of the preferred (``w``) and the other
(``l``) trajectory, with ``rho = clamp(pi_theta / pi_ref, 1 - eps, 1 + eps)`` the ratio of the
stored transition's probability under the trained and the frozen reference model::

    loss_t = -log sigmoid(beta * (log rho_w - log rho_l))      (beta 0.1, eps 0.1)

averaged over the trained steps and the prompts. A prompt whose two images tie (or that the
reward could not score) carries no preference and is skipped. Rounds, inner epochs and the
timestep plan work as in DDPO (see :mod:`dsharp.methods.ddpo`); both trajectories of a pair
train on the same steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from dsharp.methods.base import Batch
from dsharp.methods.ddpo import (
    RoundMethod,
    SampledRound,
    check_positive,
    reward_stats,
    transition_log_probs,
)
from dsharp.methods.losses import masked_mean
from dsharp.models.base import DiffusionModel


def clamped_log_ratio(
    log_prob: torch.Tensor, ref_log_prob: torch.Tensor, eps: float
) -> torch.Tensor:
    """``log clamp(pi_theta / pi_ref, 1 - eps, 1 + eps)``: gradients flow only where the
    ratio is inside the band.

    Clamped in log space (the same value): the ratio itself overflows float32 once the
    log-ratio passes ~88.7, and the clamp's zero gradient times ``exp``'s infinite one is NaN.
    """
    return torch.clamp(log_prob - ref_log_prob, math.log(1.0 - eps), math.log(1.0 + eps))


def d3po_loss(
    log_prob_w: torch.Tensor,
    log_prob_l: torch.Tensor,
    ref_log_prob_w: torch.Tensor,
    ref_log_prob_l: torch.Tensor,
    beta: float,
    eps: float,
) -> torch.Tensor:
    """Per-transition D3PO loss ``-log sigmoid(beta * (log rho_w - log rho_l))`` (elementwise
    over matching shapes)."""
    rho_w = clamped_log_ratio(log_prob_w, ref_log_prob_w, eps)
    rho_l = clamped_log_ratio(log_prob_l, ref_log_prob_l, eps)
    return -F.logsigmoid(beta * (rho_w - rho_l))


def preferred_pairs(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winner and loser of each pair of a prompt-major ``(2B,)`` reward vector.

    Returns flat indices ``(B,)`` of the preferred and the other sample and a bool ``(B,)``
    that is False where the pair ties or has an unscored sample.
    """
    if rewards.ndim != 1 or rewards.numel() % 2:
        raise ValueError("rewards must be flat with two samples per prompt")
    grid = rewards.view(-1, 2)
    first_wins = grid[:, 0] > grid[:, 1]
    offsets = torch.arange(grid.shape[0], device=rewards.device) * 2
    winners = offsets + (~first_wins).long()
    losers = offsets + first_wins.long()
    usable = ~torch.isnan(grid).any(1) & (grid[:, 0] != grid[:, 1])
    return winners, losers, usable


class D3PO(RoundMethod):
    """Two trajectories per prompt from one ``x_T``; preference by reward; D3PO loss."""

    name = "d3po"
    needs_reference = True
    samples_per_prompt = 2

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        beta: float = 0.1,
        infer_steps: int = 20,
        guidance: float = 5.0,
        eta: float = 1.0,
        eps: float = 0.1,
        inner_epochs: int = 1,
        train_timestep_fraction: float = 1.0,
        timesteps_per_step: int | None = None,
        fp32_log_probs: bool = True,
    ):
        super().__init__(
            model,
            reward,
            height,
            width,
            infer_steps=infer_steps,
            guidance=guidance,
            eta=eta,
            inner_epochs=inner_epochs,
            train_timestep_fraction=train_timestep_fraction,
            timesteps_per_step=timesteps_per_step,
            fp32_log_probs=fp32_log_probs,
        )
        D3PO._check_own({"beta": beta, "eps": eps})
        self.beta, self.eps = float(beta), float(eps)
        self._pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _derived(self) -> Any:
        return self._pairs

    def _restore_derived(self, derived: Any) -> None:
        self._pairs = derived

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        if not settings["beta"] > 0:
            raise ValueError(f"method.beta: must be > 0, got {settings['beta']}")
        eps = check_positive("eps", settings["eps"])
        if eps >= 1:
            raise ValueError(
                f"method.options.eps: must be < 1 (rho is clamped to [1-eps, 1+eps]), got {eps}"
            )

    def _initial_latents(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """One noise per prompt, shared by its two trajectories."""
        shape = (len(batch.prompts), *self.model.latent_shape(self.height, self.width))
        noise = torch.randn(shape, generator=generator)
        return noise.repeat_interleave(2, dim=0).to(self.model.device)

    def _prepare(self, rnd: SampledRound) -> tuple[int, dict[str, float]]:
        winners, losers, usable = preferred_pairs(rnd.rewards)
        self._pairs = (winners, losers, usable)
        metrics = reward_stats(rnd.rewards)
        metrics["pairs"] = int(usable.sum().item())
        # Every key on every step, NaN without a usable pair: processes average them together.
        metrics["reward_w"] = masked_mean(rnd.rewards[winners], usable)
        metrics["reward_l"] = masked_mean(rnd.rewards[losers], usable)
        return len(winners), metrics

    def _chunk_loss(
        self, rnd: SampledRound, chunk: torch.Tensor, unet: torch.nn.Module
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert self._pairs is not None
        winners, losers, usable = self._pairs
        num, per = chunk.shape
        rows = torch.cat(
            [winners.cpu().repeat_interleave(per), losers.cpu().repeat_interleave(per)]
        )
        steps = chunk.reshape(-1).repeat(2)
        kwargs = dict(guidance=self.guidance, eta=self.eta, fp32=self.fp32_log_probs)
        policy = transition_log_probs(
            self.model, self.tables, rnd, rows, steps, unet=unet, **kwargs
        )
        with torch.no_grad(), self.model.reference():
            ref = transition_log_probs(self.model, self.tables, rnd, rows, steps, **kwargs)
        half = num * per
        per_step = d3po_loss(
            policy[:half], policy[half:], ref[:half], ref[half:], self.beta, self.eps
        ).view(num, per)
        weights = usable.to(per_step.dtype)
        loss = (per_step.mean(1) * weights).sum() / weights.sum().clamp(min=1)
        with torch.no_grad():
            lo, hi = math.log(1 - self.eps), math.log(1 + self.eps)
            clipped = ((policy - ref) < lo) | ((policy - ref) > hi)
            counted = usable.cpu().repeat_interleave(per).repeat(2).to(clipped.device)
            # over the pairs the loss trains on (a tie is skipped): NaN when there are none
            metrics = {"clipfrac": masked_mean(clipped, counted)}
        return loss, metrics

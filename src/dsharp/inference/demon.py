"""Demon: reward-weighted noise at every step of a stochastic sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from dsharp.inference.base import ImageContext, check_at_least, check_eta, option_error
from dsharp.rewards.base import RewardError


@dataclass(frozen=True)
class DemonOptions:
    """``sample.options`` of demon (the authors' K=16 with T=64 steps: recipes/paper/demon.yaml).

    - ``K``: candidate noises per step.
    - ``estimate``: how a candidate's outcome is estimated: ``ode`` (deterministic DDIM
      rollout to a clean sample in ``rollout_steps`` evaluations) or ``tweedie`` (one-step
      ``x0_hat``, one evaluation).
    - ``weighting``: ``tanh`` (``tanh((r - mean r) / tau)``) or ``boltzmann``
      (``softmax(r / tau)``).
    - ``sde_eta``: DDIM eta of every step (1 = DDPM-like); ``sample.eta`` is not used.
    """

    #: named in a grid's heading (`dsharp sample`); ``sample.eta`` is left out of it, unused
    KEY_OPTIONS: ClassVar[tuple[str, ...]] = ("K", "sde_eta")
    UNUSED_SAMPLE: ClassVar[tuple[str, ...]] = ("eta",)

    K: int = 16
    estimate: Literal["ode", "tweedie"] = "ode"
    rollout_steps: int = 4
    weighting: Literal["tanh", "boltzmann"] = "tanh"
    tau: float = 0.1
    sde_eta: float = 1.0

    def __post_init__(self) -> None:
        check_at_least("K", self.K, 1)
        check_at_least("rollout_steps", self.rollout_steps, 1)
        check_at_least("tau", self.tau, 0, strict=True)
        check_eta("sde_eta", self.sde_eta)


def demon_weights(scores: torch.Tensor, weighting: str, tau: float) -> torch.Tensor:
    """Weights of the candidate noises: ``tanh((r - mean r) / tau)`` or ``softmax(r / tau)``
    over the scored candidates; a NaN score (unscorable candidate) gets weight 0, also where
    the scored ones tie under ``tanh`` (then they count equally, as 1 each)."""
    scores = scores.double()
    valid = ~torch.isnan(scores)
    if not bool(valid.any()):
        raise RewardError("the verifier could not score any candidate (every score is NaN)")
    if weighting == "tanh":
        weights = torch.tanh((scores - scores[valid].mean()) / tau)
    elif weighting == "boltzmann":
        weights = torch.softmax(torch.where(valid, scores / tau, -torch.inf), dim=0)
    else:
        raise option_error("weighting", f"expected 'tanh' or 'boltzmann', got {weighting!r}")
    weights = torch.where(valid, weights, torch.zeros_like(weights))
    if not bool(weights.any()):  # tied under tanh: else combine_noises counts every candidate
        weights = valid.double()
    return weights


def combine_noises(noises: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k z_k`` rescaled to norm ``sqrt(dim)`` (a unit-variance noise), ``(1, ...)``.

    When the weights cancel (all rewards equal under ``tanh``), the candidates count equally.
    """
    w = weights.to(noises.device, noises.dtype).reshape(-1, *([1] * (noises.ndim - 1)))
    combined = (w * noises).sum(dim=0, keepdim=True)
    if float(combined.norm()) == 0.0:
        combined = noises.sum(dim=0, keepdim=True)
    return combined * (math.sqrt(combined[0].numel()) / combined.norm())


def estimate_outcome(
    ctx: ImageContext, states: torch.Tensor, t: int, opts: DemonOptions
) -> torch.Tensor:
    """Clean estimates of candidate states at timestep ``t`` (already clean when ``t < 0``)."""
    if t < 0:
        return states
    if opts.estimate == "tweedie":
        return ctx.x0(states, ctx.eps(states, t), t)
    return ctx.rollout(states, t, opts.rollout_steps)


@torch.no_grad()
def demon(ctx: ImageContext, opts: DemonOptions) -> torch.Tensor:
    """Demon (Yeh et al. 2025, arXiv 2410.05760): at each SDE step draw ``K`` noises, score
    each candidate's estimated outcome, step with the reward-weighted, renormalised noise.

    Per step: one evaluation for the step's mean, plus ``K`` x (``rollout_steps`` or 1) for
    the estimates (x2 with CFG). A step without noise (``std == 0``) is taken as is.
    """
    x = ctx.initial_noise(1)
    for i, t in enumerate(ctx.timesteps):
        t_prev = ctx.prev(t)
        out = ctx.step(x, ctx.eps(x, t), t, t_prev, eta=opts.sde_eta, noise=torch.zeros_like(x))
        if float(out.std.max()) == 0.0:
            x = out.mean
            continue
        noises = ctx.randn(opts.K)
        states = out.mean + out.std * noises
        scores = ctx.score(estimate_outcome(ctx, states, t_prev, opts), step=i)
        weights = demon_weights(scores, opts.weighting, opts.tau)
        x = out.mean + out.std * combine_noises(noises, weights)
    return ctx.decode(x).cpu()

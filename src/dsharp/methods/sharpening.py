"""Diffusion-Sharpening (Tian et al. 2025, arXiv 2502.12146): SFT and RLHF variants.

Both variants start ``n`` noisy states per prompt at one random timestep, roll each out for
``m`` DDIM steps of ``stride`` timesteps without gradients, score every step's predicted
clean sample, and rank trajectories by their mean step reward, per prompt. SFT regresses the
winning trajectory; RLHF applies the Diffusion-DPO loss to the best/worst pair. Only the
trajectories that are trained on are recomputed with gradients, in one batched UNet call.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch

from dsharp.methods.base import Batch, TrainingMethod, timestep_range
from dsharp.methods.error_space import check_error_space, predict_in_space, target_in_space
from dsharp.methods.losses import (
    masked_mean,
    nan_mean,
    path_rewards,
    per_step_mse,
    rlhf_sharpening_loss,
    select_per_prompt,
    sft_sharpening_loss,
    trajectory_errors,
)
from dsharp.methods.online import generate_latents
from dsharp.methods.trajectory import (
    Rollout,
    decode_in_chunks,
    gather_steps,
    roll_out,
    score_rollout,
)
from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.reward_moments import scored_summary
from dsharp.rewards.base import RewardImages
from dsharp.sampling import TIMESTEP_SPACINGS


class _Sharpening(TrainingMethod):
    """Shared rollout, scoring and selection of both variants."""

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        n: int = 3,
        m: int = 3,
        stride: int | None = None,
        infer_steps: int = 25,
        target: str = "consistent",
        timestep_min: int = 0,
        timestep_max: int | None = None,
        decode_batch_size: int = 16,
        error_space: str = "epsilon",
    ):
        super().__init__(model, reward, height, width)
        own = {"error_space": error_space, "n": n, "m": m, "target": target}
        _Sharpening._check_own(own | {"decode_batch_size": decode_batch_size})
        self.error_space = error_space
        self.n, self.m = n, m
        if not stride and model.num_train_timesteps < infer_steps:
            raise ValueError(
                f"method.infer_steps: {infer_steps} is more than the model's "
                f"{model.num_train_timesteps} timesteps"
            )
        self.stride = stride or model.num_train_timesteps // infer_steps
        self.infer_steps = infer_steps
        self.target = target
        self.t_min, self.t_max = timestep_range(model, timestep_min, timestep_max)
        self.decode_batch_size = decode_batch_size

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        check_error_space(settings["error_space"])
        size = settings["decode_batch_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"method.options.decode_batch_size: must be an integer >= 1, got {size!r}"
            )
        n, m = settings["n"], settings["m"]
        if n < 1 or m < 1:
            raise ValueError(f"n and m must be >= 1 (got n={n}, m={m})")
        if settings["target"] not in ("consistent", "original"):
            target = settings["target"]
            raise ValueError(f"method.target: unknown '{target}' (expected consistent or original)")

    def _per_trajectory(self, batch: Batch) -> tuple[list[str], list[dict[str, Any]]]:
        """Prompts and reward metadata repeated for the ``n`` trajectories of each prompt."""
        prompts_n = [p for p in batch.prompts for _ in range(self.n)]
        meta_n = [dict(md, trajectory=k) for md in batch.metadata for k in range(self.n)]
        return prompts_n, meta_n

    def _rollout_and_score(
        self, batch: Batch, x0: torch.Tensor, cond: Conditioning, generator: torch.Generator
    ) -> tuple[Rollout, torch.Tensor, torch.Tensor, Conditioning]:
        """Roll out ``n`` trajectories per prompt from clean samples ``x0`` ``(B*n, ...)``.

        Returns the rollout, step rewards ``(m, B*n)``, path rewards ``(B*n,)`` and the
        conditioning repeated per trajectory.
        """
        n, device = self.n, x0.device
        num_prompts = len(batch.prompts)
        t = torch.randint(self.t_min, self.t_max, (num_prompts,), generator=generator, device="cpu")
        t = t.to(device).repeat_interleave(n)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(device, x0.dtype)
        cond_n = cond.repeat_interleave(n)
        rollout = roll_out(self.model, self.tables, x0, noise, t, cond_n, self.m, self.stride)
        prompts_n, meta_n = self._per_trajectory(batch)
        step_rewards, _ = score_rollout(
            self.model, self.reward, rollout, prompts_n, meta_n, self.decode_batch_size
        )
        returns = path_rewards(step_rewards, rollout.valid)
        return rollout, step_rewards, returns, cond_n

    def _errors(
        self,
        rollout: Rollout,
        trajectories: torch.Tensor,
        cond_n: Conditioning,
        unet: torch.nn.Module | None,
    ) -> torch.Tensor:
        """Mean step error of each chosen trajectory ``(K,)``, in one batched UNet call.

        With ``unet`` the call carries gradients; with None it runs the reference model.
        """
        step_idx, traj_idx, owner = gather_steps(rollout, trajectories)
        states = rollout.states[step_idx, traj_idx]
        timesteps = rollout.timesteps[step_idx, traj_idx]
        cond = cond_n.index(traj_idx)
        if unet is None:
            with torch.no_grad(), self.model.reference():
                pred = predict_in_space(
                    self.model, self.tables, self.error_space, states, timesteps, cond
                )
        else:
            pred = predict_in_space(
                self.model, self.tables, self.error_space, states, timesteps, cond, unet
            )
        # The epsilon target of a later trajectory step is the noise its state implies
        # (method.target), and the other spaces' targets derive from it.
        eps = rollout.targets_at(self.target, self.tables, step_idx, traj_idx)
        targets = target_in_space(
            self.model, self.error_space, rollout.x0[traj_idx], eps, timesteps
        )
        return trajectory_errors(per_step_mse(pred, targets), owner, trajectories.numel())

    @staticmethod
    def _reward_metrics(returns: torch.Tensor, best: torch.Tensor, worst: torch.Tensor) -> dict:
        """The rewards of all trajectories, and of the best and worst of each prompt that
        has a scored one (means over those prompts)."""
        return {
            **scored_summary(returns),
            "reward_best": nan_mean(returns[best]),
            "reward_worst": nan_mean(returns[worst]),
        }


class SFTSharpening(_Sharpening):
    """SFT Diffusion-Sharpening: trajectories start from data latents; train on the best."""

    name = "sft_sharpening"
    data_kind = "images"

    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.images is None:
            raise ValueError(
                "sft_sharpening needs image-text data (data.dataset or data.generator)"
            )
        model = self.model
        with torch.no_grad():
            x0 = model.encode_images(batch.images.to(model.device), generator=generator)
            cond = model.encode_prompt(batch.cond_prompts, self.height, self.width)
        x0_n = x0.repeat_interleave(self.n, dim=0)
        rollout, _, returns, cond_n = self._rollout_and_score(batch, x0_n, cond, generator)
        best, worst, usable = select_per_prompt(returns, self.n)
        errors = self._errors(rollout, best, cond_n, unet)
        weights = usable.to(errors.dtype)
        # Prompts with no scored trajectory still run forward (DDP needs every process to
        # use the same parameters) but weigh nothing.
        loss = sft_sharpening_loss(errors * weights) * (len(weights) / weights.sum().clamp(min=1))
        metrics = self._reward_metrics(returns, best, worst)
        metrics["winner_mse"] = masked_mean(errors.detach(), usable)
        return loss, metrics


class RLHFSharpening(_Sharpening):
    """RLHF Diffusion-Sharpening: online samples, DPO loss on the best/worst trajectory.

    ``winner_weight`` (``method.options``; default 0, the paper's loss) adds that multiple of
    the best trajectory's error, SFT sharpening's regression on the winner, to each prompt's
    DPO loss. Why: the DPO form alone can lower the likelihood of both trajectories, and on
    dsharp-mini it lowered the reward of the model's own samples; the winner term anchors
    training on what the reward preferred (the "DPO + NLL" remedy of preference tuning).

    ``sample_weight`` (``method.options``; default 0, the paper's ranking) mixes each online
    sample's own reward into its trajectory's return: ``(1 - a) * mean step reward + a *
    sample reward``. Why: the loss regresses every trajectory toward its sample, but early
    trajectory steps predict blurry images whose scores can disagree with the sample's: on
    the quickstart's prompts the path ranking put the worse sample first in 9 of 48 trained
    pairs and tied the samples in 14 (``scripts/probe_sample_ranking.py``). Scoring the
    samples costs one reward call and no network evaluation.

    ``sample_spacing`` (``method.options``; default None, the scheduler's own) sets the
    timestep spacing of the online samples only (``leading``, ``trailing`` or ``linspace``).
    Why: few-step ``leading`` samples start far below the last timestep (see
    :func:`dsharp.methods.online.generate_latents`).

    ``sample_from`` (``method.options``; default ``policy``, the paper's online training)
    set to ``reference`` draws the online samples and their trajectories from the frozen
    reference model instead, so every step's pairs come from one fixed distribution, as
    Diffusion-DPO's preference data does; only the loss's recomputation runs the trained
    UNet. Why: to test whether on-policy feedback drives runs of different seeds apart. On
    dsharp-mini it does not (they diverge as much either way); the quickstart's mean held-out
    gain over eight training seeds rose within the runs' spread, and their merge gained less
    (docs/dsharp-mini-notes.md).
    """

    name = "rlhf_sharpening"
    data_kind = "prompts"
    needs_reference = True

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        beta: float = 2500.0,
        guidance: float = 5.0,
        eta: float = 0.0,
        winner_weight: float = 0.0,
        sample_weight: float = 0.0,
        sample_spacing: str | None = None,
        sample_from: str = "policy",
        **kwargs: Any,
    ):
        super().__init__(model, reward, height, width, **kwargs)
        own = {"n": self.n, "winner_weight": winner_weight, "sample_weight": sample_weight}
        own |= {"sample_spacing": sample_spacing, "sample_from": sample_from}
        RLHFSharpening._check_own(own)
        self.sample_spacing = sample_spacing
        self.sample_from = sample_from
        self.beta, self.guidance, self.eta = beta, guidance, eta
        self.winner_weight = float(winner_weight)
        self.sample_weight = float(sample_weight)

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        if settings["n"] < 2:
            raise ValueError("rlhf_sharpening needs method.n >= 2 (a best and a worst trajectory)")
        for name, low, high in (("winner_weight", 0, None), ("sample_weight", 0, 1)):
            value = settings[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"method.options.{name}: expected a number, got {value!r}")
            if not value >= low or (high is not None and not value <= high):  # NaN fails
                bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"method.options.{name}: must be {bound}, got {value}")
        spacing = settings["sample_spacing"]
        if spacing is not None and spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"method.options.sample_spacing: unknown {spacing!r} "
                f"(expected {', '.join(TIMESTEP_SPACINGS)}, or null for the scheduler's own)"
            )
        if settings["sample_from"] not in ("policy", "reference"):
            raise ValueError(
                f"method.options.sample_from: unknown {settings['sample_from']!r} "
                "(expected policy or reference)"
            )

    def _sample_rewards(self, batch: Batch, x0_n: torch.Tensor) -> torch.Tensor:
        """Reward of each online sample ``(B*n,)``; NaN where the reward could not score."""
        prompts_n, meta_n = self._per_trajectory(batch)
        images = decode_in_chunks(self.model, x0_n, self.decode_batch_size)
        with torch.no_grad():
            scores, _ = self.reward(RewardImages(images), prompts_n, meta_n)
        return scores.to(x0_n.device, torch.float32)

    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        model, n = self.model, self.n
        sampler = model.reference() if self.sample_from == "reference" else nullcontext()
        with torch.no_grad():
            cond = model.encode_prompt(batch.cond_prompts, self.height, self.width)
            with sampler:
                x0_n = generate_latents(
                    model,
                    cond.repeat_interleave(n),
                    steps=self.infer_steps,
                    guidance=self.guidance,
                    height=self.height,
                    width=self.width,
                    eta=self.eta,
                    generator=generator,
                    timestep_spacing=self.sample_spacing,
                )
                rollout, _, returns, cond_n = self._rollout_and_score(batch, x0_n, cond, generator)
        sample_rewards = None
        if self.sample_weight:
            sample_rewards = self._sample_rewards(batch, x0_n)
            a = self.sample_weight
            returns = (1 - a) * returns + a * sample_rewards
        best, worst, usable = select_per_prompt(returns, n)
        # A tie carries no preference; a prompt whose best equals its worst is skipped.
        usable = usable & (returns[best] > returns[worst])
        chosen = torch.cat([best, worst])
        policy = self._errors(rollout, chosen, cond_n, unet)
        reference = self._errors(rollout, chosen, cond_n, None)
        num_prompts = best.numel()
        per_prompt = rlhf_sharpening_loss(
            policy[:num_prompts],
            policy[num_prompts:],
            reference[:num_prompts],
            reference[num_prompts:],
            self.beta,
        )
        if self.winner_weight:
            per_prompt = per_prompt + self.winner_weight * policy[:num_prompts]
        weights = usable.to(per_prompt.dtype)
        loss = (per_prompt * weights).sum() / weights.sum().clamp(min=1)
        metrics = self._reward_metrics(returns, best, worst)
        if sample_rewards is not None:
            metrics["sample_reward"] = nan_mean(sample_rewards)
        with torch.no_grad():
            margin = (reference[:num_prompts] - reference[num_prompts:]) - (
                policy[:num_prompts] - policy[num_prompts:]
            )
            metrics["implicit_acc"] = masked_mean((margin > 0).float(), usable)
        metrics["pairs"] = int(usable.sum().item())
        metrics["winner_mse"] = masked_mean(policy[:num_prompts].detach(), usable)
        return loss, metrics

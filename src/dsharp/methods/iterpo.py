"""IterPO: the reward-feedback learning (ReFL) step of IterComp (Zhang et al., ICLR 2025,
arXiv 2410.07171), which the Diffusion-Sharpening paper cites as IterPO.

Per batch: run a ``reference_steps``-step DDIM schedule (the authors: 40) without gradients
up to a random step ``k`` in ``[grad_step_min, grad_step_max]`` (30..39; with another
``method.infer_steps`` the range is scaled by ``infer_steps / reference_steps``), take step
``k`` with gradients, decode its predicted clean sample ``x0_hat`` with gradients and score it
with every reward of the recipe::

    loss = loss_scale * mean_i sum_r weight_r * relu(margin - score_r(x0_hat_i))

(``margin`` 2, ``loss_scale`` 1e-3: ImageReward's ReFL constants, which IterComp sums over
its composition rewards). The gradient reaches the UNet through the reward, the decoder
and the one UNet call, so every reward with a non-zero weight must be differentiable; a
non-differentiable one is an error when the method is built, before any training step.
A weight-0 reward is scored without gradients and only logged.

The rest of IterComp's loop (regenerate, re-rank, retrain the reward models) is not part
of this method: run it outside dsharp and point the recipe at the retrained rewards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dsharp.methods.base import Batch, TrainingMethod
from dsharp.models.base import DiffusionModel
from dsharp.reward_moments import scored_summary
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.sampling import ddim_step, guided_noise, inference_timesteps, previous_timesteps


def refl_loss(scores: torch.Tensor, weights: Sequence[float], margin: float) -> torch.Tensor:
    """Per-sample ReFL loss ``sum_r weight_r * relu(margin - score_r)``.

    ``scores`` ``(R, N)``: one row per reward; returns ``(N,)``.
    """
    w = torch.as_tensor(list(weights), dtype=scores.dtype, device=scores.device)
    return (w[:, None] * torch.relu(margin - scores)).sum(0)


def grad_step_range(
    infer_steps: int, grad_step_min: int, grad_step_max: int, reference_steps: int
) -> tuple[int, int]:
    """The inclusive range of the gradient step on an ``infer_steps`` schedule: the
    authors' range on their ``reference_steps`` schedule, scaled proportionally."""
    low = grad_step_min * infer_steps // reference_steps
    high = min(infer_steps - 1, grad_step_max * infer_steps // reference_steps)
    return low, max(low, high)


def reward_components(reward: Any) -> list[tuple[str, Any, Any]]:
    """``(name, spec or None, built reward)`` of each reward behind ``reward``: the parts of a
    :class:`~dsharp.rewards.combine.CombinedReward`, or the reward itself."""
    specs, rewards = getattr(reward, "specs", None), getattr(reward, "rewards", None)
    if specs is not None and rewards is not None:
        keys = getattr(reward, "keys", [s.name for s in specs])
        return list(zip(keys, specs, rewards, strict=True))
    return [(type(reward).__name__, None, reward)]


class IterPO(TrainingMethod):
    """ReFL on the predicted clean sample of one random late DDIM step."""

    name = "iterpo"
    data_kind = "prompts"

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        infer_steps: int = 40,
        guidance: float = 5.0,
        eta: float = 0.0,
        grad_step_min: int = 30,
        grad_step_max: int = 39,
        reference_steps: int = 40,
        margin: float = 2.0,
        loss_scale: float = 1e-3,
    ):
        super().__init__(model, reward, height, width)
        own = {"grad_step_min": grad_step_min, "grad_step_max": grad_step_max}
        own |= {"reference_steps": reference_steps, "margin": margin, "loss_scale": loss_scale}
        IterPO._check_own(own)
        self.components = reward_components(reward)
        for key, spec, built in self.components:
            weight = spec.weight if spec is not None else 1.0
            if weight != 0 and not getattr(built, "differentiable", False):
                raise ValueError(
                    f"method iterpo needs differentiable rewards, but reward {key!r} is not "
                    "(it back-propagates through the reward: use e.g. clip, aesthetic, "
                    "pickscore, hpsv2 or imagereward, or give this reward weight 0)"
                )
            if weight != 0 and spec is not None and spec.normalize == "batch_zscore":
                raise ValueError(
                    f"method iterpo cannot train on reward {key!r} with normalize: "
                    "batch_zscore: its scores sum to zero over each micro-batch, so the loss "
                    "is constant below the margin and lowers the samples above it (use "
                    "normalize: none, or give this reward weight 0)"
                )
        if all((spec.weight if spec is not None else 1.0) == 0 for _, spec, _ in self.components):
            raise ValueError("method iterpo needs at least one reward with a non-zero weight")
        self.infer_steps, self.guidance, self.eta = infer_steps, guidance, eta
        self.k_range = grad_step_range(infer_steps, grad_step_min, grad_step_max, reference_steps)
        self.margin, self.loss_scale = float(margin), float(loss_scale)

    @staticmethod
    def _check_own(settings: Mapping[str, Any]) -> None:
        for option in ("grad_step_min", "grad_step_max", "reference_steps"):
            value = settings[option]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"method.options.{option}: expected an integer, got {value!r}")
        low, high = settings["grad_step_min"], settings["grad_step_max"]
        reference_steps = settings["reference_steps"]
        if not 0 <= low <= high < reference_steps:
            raise ValueError(
                "method.options.grad_step_min/grad_step_max: need 0 <= min <= max < "
                f"reference_steps ({reference_steps}), got {low}..{high}"
            )
        for option in ("margin", "loss_scale"):
            value = settings[option]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"method.options.{option}: expected a number, got {value!r}")
        if not settings["loss_scale"] > 0:
            raise ValueError(
                f"method.options.loss_scale: must be > 0, got {settings['loss_scale']}"
            )

    def _score(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """Scores ``(R, N)`` (gradients through rewards with non-zero weight), the weighted
        total ``(N,)`` as CombinedReward sums it, and the weights."""
        rows, total, weights = [], torch.zeros(images.shape[0], device=images.device), []
        for key, spec, built in self.components:
            weight = spec.weight if spec is not None else 1.0
            grad = weight != 0 and torch.is_grad_enabled()
            with torch.set_grad_enabled(grad):
                pixels = RewardImages(images if grad else images.detach())
                if spec is not None:  # a CombinedReward's part: its checks, as in training
                    scores, _ = self.reward.score_component(
                        key, spec, built, pixels, prompts, metadata
                    )
                else:
                    scores, _ = built(pixels, prompts, metadata)
            unscored = bool(torch.isnan(scores.detach()).all())  # on_error missing: no score
            if grad and images.requires_grad and not scores.requires_grad and not unscored:
                raise RewardError(
                    f"reward {key!r} is differentiable but returned scores without gradients: "
                    "compute them from images.tensor with torch operations (not .pil, numpy "
                    "or .detach()), or register it with differentiable=False"
                )
            scores = scores.to(images.device, torch.float32)
            if weight != 0:
                rows.append(scores)
                weights.append(weight)
            total = total + weight * scores.detach() if weight != 0 else total
        return torch.stack(rows), total, weights

    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        model, steps = self.model, self.infer_steps
        num = len(batch.prompts)
        low, high = self.k_range
        k = int(torch.randint(low, high + 1, (1,), generator=generator))
        shape = (num, *model.latent_shape(self.height, self.width))
        with torch.no_grad():
            cond = model.encode_prompt(batch.cond_prompts, self.height, self.width)
            uncond = (
                model.encode_negative(num, self.height, self.width) if self.guidance > 1 else None
            )
        x = (
            torch.randn(shape, generator=generator).to(model.device)
            * model.scheduler.init_noise_sigma
        )
        timesteps = inference_timesteps(model.scheduler, steps).to(model.device)
        t_nexts = previous_timesteps(timesteps, self.tables.num_train_timesteps)
        for t, t_next in zip(timesteps[:k], t_nexts[:k], strict=True):
            t_vec = t.expand(num)
            with torch.no_grad():
                eps = guided_noise(model, x, t_vec, cond, uncond, self.guidance).float()
            noise = torch.randn(shape, generator=generator).to(x.device) if self.eta > 0 else None
            t_prev = t_next.expand(num)
            x = ddim_step(self.tables, x, eps, t_vec, t_prev, eta=self.eta, noise=noise).prev_sample
        t_vec = timesteps[k].expand(num)
        eps = guided_noise(model, x, t_vec, cond, uncond, self.guidance, unet=unet).float()
        t_prev = t_nexts[k].expand(num)
        x0_hat = ddim_step(self.tables, x, eps, t_vec, t_prev).pred_x0
        images = model.decode(x0_hat)
        metadata = [dict(md, grad_step=k) for md in batch.metadata]
        scores, total, weights = self._score(images, list(batch.prompts), metadata)
        per_sample = refl_loss(scores, weights, self.margin)
        valid = ~torch.isnan(per_sample)
        loss = self.loss_scale * torch.where(valid, per_sample, torch.zeros_like(per_sample))
        loss = loss.sum() / valid.sum().clamp(min=1)
        metrics = {**scored_summary(total, std=False), "grad_step": float(k)}
        return loss, metrics

"""Standard fine-tuning: the denoising loss on image-text data (Ho et al. 2020), the
baseline Diffusion-Sharpening's SFT variant is compared with, and how dsharp-mini is
pretrained."""

from __future__ import annotations

from typing import Any

import torch

from dsharp.methods.base import Batch, TrainingMethod, timestep_range
from dsharp.methods.error_space import clean_from_prediction
from dsharp.methods.losses import per_step_mse
from dsharp.models.base import DiffusionModel
from dsharp.sampling import add_noise


def denoising_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the UNet's output and its target (the drawn noise, or the
    velocity for a v-prediction model), averaged over the batch."""
    return per_step_mse(pred, target).mean()


class FineTune(TrainingMethod):
    """Noise data latents at uniform random timesteps in ``[timestep_min, timestep_max)``
    (the recipe's ``method.timestep_min/max``; default all of them) and regress the noise
    (or, for a v-prediction model, the velocity)."""

    name = "finetune"
    data_kind = "images"
    trains_on_reward = False  # the reward is logged, never trained on

    def __init__(
        self,
        model: DiffusionModel,
        reward: Any,
        height: int,
        width: int,
        *,
        timestep_min: int = 0,
        timestep_max: int | None = None,
    ):
        super().__init__(model, reward, height, width)
        self.t_min, self.t_max = timestep_range(model, timestep_min, timestep_max)

    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.images is None:
            raise ValueError("finetune needs image-text data (data.dataset or data.generator)")
        model = self.model
        with torch.no_grad():
            x0 = model.encode_images(batch.images.to(model.device), generator=generator)
            cond = model.encode_prompt(batch.cond_prompts, self.height, self.width)
        t = torch.randint(self.t_min, self.t_max, (x0.shape[0],), generator=generator)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        x_t = add_noise(self.tables, x0, eps, t.to(x0.device))
        t = t.to(x0.device)
        pred = model.predict_native(x_t, t, cond, unet=unet)
        loss = denoising_loss(pred, model.native_target(x0, eps, t))
        metrics = {"mse": loss.detach().item()}
        if self.reward is not None:
            x0_hat = clean_from_prediction(model, self.tables, "native", x_t, pred.detach(), t)
            metrics.update(self._predicted_reward(batch, x0_hat))
        return loss, metrics

    @torch.no_grad()
    def _predicted_reward(self, batch: Batch, x0_hat: torch.Tensor) -> dict[str, float]:
        """Mean ``reward`` of the clean images the model predicts from this step's noisy
        inputs (and the count it is over): a reward to log for comparison with reward-driven
        methods (it is not trained on)."""
        from dsharp.reward_moments import scored_mean
        from dsharp.rewards.base import RewardImages

        images = self.model.decode(x0_hat)
        scores, _ = self.reward(RewardImages(images), batch.prompts, batch.metadata)
        return scored_mean(scores)

"""Standard fine-tuning: the denoising loss on image-text data (Ho et al. 2020), the
baseline Diffusion-Sharpening's SFT variant is compared with, and how dsharp-mini is
pretrained."""

from __future__ import annotations

from typing import Any

import torch

from dsharp.methods.base import Batch, TrainingMethod
from dsharp.methods.losses import per_step_mse
from dsharp.models.base import DiffusionModel
from dsharp.sampling import add_noise, pred_x0_from_eps


def denoising_loss(pred_eps: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and drawn noise, averaged over the batch."""
    return per_step_mse(pred_eps, eps).mean()


class FineTune(TrainingMethod):
    """Noise data latents at uniform random timesteps and regress the noise."""

    name = "finetune"
    data_kind = "images"

    def __init__(self, model: DiffusionModel, reward: Any, height: int, width: int, **_: Any):
        super().__init__(model, reward, height, width)

    def compute_loss(
        self, batch: Batch, unet: torch.nn.Module, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.images is None:
            raise ValueError("finetune needs image-text data (data.dataset or data.generator)")
        model = self.model
        with torch.no_grad():
            x0 = model.encode_images(batch.images.to(model.device), generator=generator)
            cond = model.encode_prompt(batch.cond_prompts, self.height, self.width)
        t = torch.randint(0, model.num_train_timesteps, (x0.shape[0],), generator=generator)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        x_t = add_noise(self.tables, x0, eps, t.to(x0.device))
        pred = model.predict_noise(x_t, t.to(x0.device), cond, unet=unet)
        loss = denoising_loss(pred, eps)
        metrics = {"mse": loss.detach().item()}
        if self.reward is not None:
            metrics["reward"] = self._predicted_reward(batch, x_t, pred.detach(), t.to(x0.device))
        return loss, metrics

    @torch.no_grad()
    def _predicted_reward(
        self, batch: Batch, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
    ) -> float:
        """Mean reward of the clean images the model predicts from this step's noisy inputs:
        a reward to log for comparison with reward-driven methods (it is not trained on)."""
        from dsharp.rewards.base import RewardImages

        images = self.model.decode(pred_x0_from_eps(self.tables, x_t, eps, t))
        scores, _ = self.reward(RewardImages(images), batch.prompts, batch.metadata)
        scores = scores[~torch.isnan(scores)]
        return scores.mean().item() if scores.numel() else float("nan")

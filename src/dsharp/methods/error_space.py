"""Where a denoising error is measured: the space of ``method.options.error_space``.

- ``epsilon``: predicted vs drawn noise, as the public code of Diffusion-DPO and
  Diffusion-Sharpening does.
- ``native``: the UNet's own output against its own target (v for a v-prediction model):
  the loss the model was pretrained with. An epsilon error is ``abar_t`` times the v error,
  so in epsilon space the noisy states where layout is decided weigh almost nothing.
- ``x0``: the predicted clean sample against the clean sample, a bounded target.

Errors in the three spaces differ only by a per-timestep factor, which is what decides
how much each timestep counts in a loss.
"""

from __future__ import annotations

import torch

from dsharp.models.base import Conditioning, DiffusionModel
from dsharp.sampling import DDIMTables, pred_x0_from_eps, x0_from_v

ERROR_SPACES = ("epsilon", "native", "x0")


def check_error_space(space: str) -> str:
    """``space`` if it names an error space; else a one-line error naming the option."""
    if space not in ERROR_SPACES:
        raise ValueError(
            f"method.options.error_space: unknown '{space}' "
            f"(expected one of {', '.join(ERROR_SPACES)})"
        )
    return space


def predict_in_space(
    model: DiffusionModel,
    tables: DDIMTables,
    space: str,
    states: torch.Tensor,
    timesteps: torch.Tensor,
    cond: Conditioning,
    unet: torch.nn.Module | None = None,
) -> torch.Tensor:
    """The model's prediction at ``states`` in ``space`` (``unet``: the module to call, for
    passes that need gradients; by default the model's own)."""
    if space == "epsilon":
        return model.predict_noise(states, timesteps, cond, unet=unet)
    pred = model.predict_native(states, timesteps, cond, unet=unet)
    if space == "native":
        return pred
    return clean_from_prediction(model, tables, "native", states, pred, timesteps)


def clean_from_prediction(
    model: DiffusionModel,
    tables: DDIMTables,
    space: str,
    states: torch.Tensor,
    pred: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """The clean sample implied by a prediction ``pred`` in ``space`` at ``states``."""
    if space == "x0":
        return pred
    if space == "native" and model.prediction_type == "v_prediction":
        return x0_from_v(tables, states, pred, timesteps)
    return pred_x0_from_eps(tables, states, pred, timesteps)


def target_in_space(
    model: DiffusionModel,
    space: str,
    x0: torch.Tensor,
    eps: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """What :func:`predict_in_space` should output for clean ``x0`` noised by ``eps``."""
    if space == "epsilon":
        return eps
    if space == "native":
        return model.native_target(x0, eps, timesteps)
    return x0

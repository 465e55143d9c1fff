"""Builds the training method a recipe names (``method.name``) from its ``method`` section."""

from __future__ import annotations

from typing import Any

from dsharp.methods.base import TrainingMethod
from dsharp.models.base import DiffusionModel


def build_method(
    cfg: Any, model: DiffusionModel, reward: Any, height: int, width: int
) -> TrainingMethod:
    """Instantiate ``cfg.name`` with the recipe's hyperparameters."""
    from dsharp.methods.finetune import FineTune
    from dsharp.methods.sharpening import RLHFSharpening, SFTSharpening

    if cfg.name == "finetune":
        return FineTune(model, reward, height, width)
    common = dict(
        n=cfg.n,
        m=cfg.m,
        stride=cfg.stride,
        infer_steps=cfg.infer_steps,
        target=cfg.target,
        timestep_min=cfg.timestep_min,
        timestep_max=cfg.timestep_max,
        **cfg.options,
    )
    if cfg.name == "sft_sharpening":
        return SFTSharpening(model, reward, height, width, **common)
    if cfg.name == "rlhf_sharpening":
        return RLHFSharpening(
            model,
            reward,
            height,
            width,
            beta=cfg.beta,
            guidance=cfg.guidance,
            eta=cfg.eta,
            **common,
        )
    raise NotImplementedError(f"method.name: '{cfg.name}' is not implemented yet")

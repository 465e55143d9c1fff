"""Small builders that turn recipe sections into objects (torchtune style): the config
never travels through the code as a global; each consumer gets what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsharp.models.base import DiffusionModel

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_model(model_cfg: Any, device: torch.device | str = "cpu") -> DiffusionModel:
    """Load ``model.pretrained`` behind the adapter interface, with LoRA if asked."""
    from dsharp.models import load_model

    return load_model(
        model_cfg.pretrained,
        family=model_cfg.family,
        lora_rank=model_cfg.lora_rank,
        lora_alpha=model_cfg.lora_alpha,
        gradient_checkpointing=model_cfg.gradient_checkpointing,
        device=device,
        weight_dtype=DTYPES[model_cfg.weight_dtype],
        revision=model_cfg.revision,
        variant=model_cfg.variant,
    )


def build_reward(reward_specs: list[Any]) -> Any:
    """One callable that scores with every configured reward and combines them."""
    from dsharp.rewards.combine import CombinedReward

    return CombinedReward(reward_specs)


def resolution(model: DiffusionModel, height: int | None, width: int | None) -> tuple[int, int]:
    """Requested size, or the model's native one; a size the model cannot draw (SD: not a
    multiple of 8) is a ``RecipeError`` here, before any work, like any invalid setting."""
    from dsharp.recipe_errors import RecipeError

    side = model.default_resolution
    size = (height or side, width or side)
    try:
        model.latent_shape(*size)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    return size


def read_run_recipe(checkpoint: Path, label: str = "--checkpoint") -> Any:
    """The saved recipe of the run a checkpoint folder belongs to; ``label`` names the input
    in the error when the run folder has none."""
    from dsharp.checkpoints import run_dir_of
    from dsharp.recipe_io import load_recipe

    recipe_path = run_dir_of(checkpoint) / "recipe.yaml"
    if not recipe_path.exists():
        raise FileNotFoundError(f"{label}: {recipe_path} is missing (not a dsharp run folder)")
    return load_recipe(recipe_path, validate_files=False)


def load_run_model(
    checkpoint: Path, device: torch.device | str = "cpu", label: str = "--checkpoint"
) -> tuple[DiffusionModel, Any]:
    """The fine-tuned model of a run folder (newest checkpoint) or of one checkpoint folder.

    Returns the model and the run's recipe. ``label`` names the input in errors (the
    command's flag, or a Python function's argument).
    """
    from dsharp.checkpoints import find_model_checkpoint, run_dir_of
    from dsharp.trained_fit import check_checkpoint_fits

    ckpt = find_model_checkpoint(Path(checkpoint), label)
    recipe = read_run_recipe(ckpt, label)
    check_checkpoint_fits(ckpt, recipe.model, run_dir_of(ckpt) / "recipe.yaml")
    try:
        model = build_model(recipe.model, device)
    except FileNotFoundError as err:
        source = f"model.pretrained of {run_dir_of(ckpt) / 'recipe.yaml'}"
        if not Path(recipe.model.pretrained).expanduser().is_absolute():
            source += ", a path relative to the folder the run was trained from"
        raise FileNotFoundError(f"{err} ({source})") from None
    model.load_trained(ckpt / "model")
    return model, recipe

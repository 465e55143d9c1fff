"""Small builders that turn recipe sections into objects (torchtune style): the config
never travels through the code as a global; each consumer gets what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsharp.checkpoints import read_run_recipe  # noqa: F401 (imported from here before)
from dsharp.hub import user_path
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


def load_run_model(
    checkpoint: Path, device: torch.device | str = "cpu", label: str = "--checkpoint"
) -> tuple[DiffusionModel, Any]:
    """The fine-tuned model of a run folder (newest checkpoint) or of one checkpoint folder.

    Returns the model and the run's recipe. ``label`` names the input in errors (the
    command's flag, or a Python function's argument). A checkpoint that does not fit the
    base its run's recipe names is refused: by config before the base loads, by the base
    weights' fingerprint before the trained weights are applied to them (read from the
    base's files before it loads, where they tell).
    """
    from dsharp.base_files import files_fingerprint
    from dsharp.base_fingerprint import base_fingerprint, check_base_fingerprint
    from dsharp.checkpoints import find_model_checkpoint, run_dir_of
    from dsharp.trained_fit import check_run_fits

    ckpt = find_model_checkpoint(Path(checkpoint), label)
    recipe = check_run_fits(ckpt, label)
    recipe_path = run_dir_of(ckpt) / "recipe.yaml"
    base = recipe.model
    early = files_fingerprint(ckpt, base)
    if early is not None:
        check_base_fingerprint(ckpt, early, base.pretrained, recipe_path, revision=base.revision)
    try:
        model = build_model(recipe.model, device)
    except FileNotFoundError as err:
        source = f"model.pretrained of {recipe_path}"
        if not user_path(recipe.model.pretrained).is_absolute():
            source += ", a path relative to the folder the run was trained from"
        raise FileNotFoundError(f"{err} ({source})") from None
    fingerprint = base_fingerprint(model, base.pretrained, base.revision)
    check_base_fingerprint(ckpt, fingerprint, base.pretrained, recipe_path, revision=base.revision)
    model.load_trained(ckpt / "model")
    return model, recipe

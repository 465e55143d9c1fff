"""Whether a checkpoint's trained UNet fits the base model that its run's recipe names.

Why: a run folder whose ``recipe.yaml`` was edited (or copied beside another run's
checkpoints) names another base than the weights were trained from; torch's
``load_state_dict`` then printed every tensor that differs, tens of kilobytes on one line,
after the base model had loaded. These checks read two ``config.json`` files (before any
model loads) and compare shapes (before any weights are copied), and say it in one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The UNet config keys that decide its tensors' names and shapes (``sample_size`` and the
#: like do not): two UNets that agree on these load each other's weights.
SHAPE_KEYS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "down_block_types",
    "up_block_types",
    "mid_block_type",
    "layers_per_block",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "attention_head_dim",
    "num_attention_heads",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
    "class_embed_type",
    "num_class_embeds",
    "time_embedding_type",
    "conv_in_kernel",
    "conv_out_kernel",
    "encoder_hid_dim",
)


class TrainedMisfit(ValueError):
    """Trained weights that do not fit the base model: every checkpoint of the run is
    affected alike, so (unlike a damaged file) an older checkpoint is no way on."""


#: What a mismatch message suggests happened, for a user who did not change anything knowingly.
MISMATCH_CAUSE = "the run was trained from another base model, or its recipe.yaml was changed"


def _plain(value: Any) -> Any:
    """A config value as JSON reads it (tuples as lists), so that a loaded config and a file
    compare equal."""
    return json.loads(json.dumps(value))


def unet_config_difference(trained: Mapping[str, Any], base: Mapping[str, Any]) -> str | None:
    """``"cross_attention_dim: 48 in the checkpoint, 32 in the base"`` for the first shape
    key the two UNet configs give different values, None when they agree. A key only one of
    them has is passed over: configs saved by older diffusers leave out keys it defaults."""
    for key in SHAPE_KEYS:
        if key in trained and key in base and _plain(trained[key]) != _plain(base[key]):
            return f"{key}: {trained[key]!r} in the checkpoint, {base[key]!r} in the base"
    return None


def state_dict_difference(
    loaded: Mapping[str, Any], expected: Mapping[str, Any], lora_only: bool = False
) -> str | None:
    """The first tensor by which ``loaded`` (a checkpoint's) differs from ``expected`` (the
    model's): a shape, or a name only one of them has; None when every tensor fits.
    ``lora_only`` compares only the model's LoRA tensors (a LoRA file holds no others)."""
    names = [k for k in expected if not lora_only or "lora_" in k]
    for name in names:
        if name in loaded and tuple(loaded[name].shape) != tuple(expected[name].shape):
            return (
                f"{name}: shape {list(loaded[name].shape)} in the checkpoint, "
                f"{list(expected[name].shape)} in the base"
            )
    extra = sorted(set(loaded) - set(expected))
    if extra:
        return f"{extra[0]}: in the checkpoint, not in the base"
    missing = sorted(set(names) - set(loaded))
    if missing:
        return f"{missing[0]}: in the base, not in the checkpoint"
    return None


def base_unet_config(pretrained: str, revision: str | None = None) -> dict[str, Any] | None:
    """The base model's ``unet/config.json`` where it can be read without loading anything (a
    folder, a built-in model, a hub id in the local cache); None otherwise (the model load
    then says what is wrong with it)."""
    from dsharp.models.loading import resolve_pretrained

    try:
        source = Path(resolve_pretrained(pretrained))
        path: Any = source / "unet" / "config.json"
        if not path.is_file() and not source.exists():
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(str(pretrained), "unet/config.json", revision=revision)
            if not isinstance(path, str):
                return None
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - unreadable here: the model load reports it
        return None
    return config if isinstance(config, dict) else None


#: Why a branch (``train.resume`` of another run's checkpoint) does not fit: its recipe is
#: the user's own, not an edited copy of the run's.
BRANCH_CAUSE = "the checkpoint's run trained another model"


def check_checkpoint_fits(
    checkpoint: Path, model_cfg: Any, recipe_path: Path | str, *, branch: bool = False
) -> None:
    """``ValueError`` naming the checkpoint's trained UNet folder when it cannot have been
    trained from the base that ``model_cfg`` (read from ``recipe_path``) names: a full
    fine-tuning whose UNet config differs in shape, or one under a recipe that says LoRA.
    ``branch``: the recipe is another run's that starts from the checkpoint, so the cause
    given is not an edited ``recipe.yaml``. Only config files are read, so this runs before
    the base model loads."""
    unet_folder = Path(checkpoint) / "model" / "unet"
    config_file = unet_folder / "config.json"
    if not config_file.is_file():
        return  # a LoRA checkpoint (or a damaged one: the load names what is missing)
    if model_cfg.lora_rank:
        raise TrainedMisfit(
            f"{unet_folder}: a fully fine-tuned UNet, but {recipe_path} says model.lora_rank: "
            f"{model_cfg.lora_rank} ("
            + (
                f"{BRANCH_CAUSE}: set model.lora_rank: 0"
                if branch
                else "its recipe.yaml was changed after training"
            )
            + ")"
        )
    try:
        trained = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable: the load names the file
    base = base_unet_config(model_cfg.pretrained, getattr(model_cfg, "revision", None))
    if not isinstance(trained, dict) or base is None:
        return
    difference = unet_config_difference(trained, base)
    if difference is not None:
        raise TrainedMisfit(
            f"{unet_folder}: not a fine-tuning of {model_cfg.pretrained}, the base model "
            f"that {recipe_path} names ({difference}; {BRANCH_CAUSE if branch else MISMATCH_CAUSE})"
        )


def check_lora_resume_fits(
    checkpoint: Path, model_cfg: Any, recipe_path: Path | str, *, branch: bool = False
) -> None:
    """A resume (or branch) from a LoRA checkpoint under a recipe that fully fine-tunes
    (``model.lora_rank: 0``): the load would add the adapter to a model whose optimizer holds
    the whole UNet, and torch's error then spoke of parameter groups. Said before the model
    loads. (Loading such a checkpoint to sample from it works: the adapter is added.)"""
    model_folder = Path(checkpoint) / "model"
    if model_cfg.lora_rank:
        return  # rank, alpha and targets are compared when the LoRA loads
    try:
        rank = json.loads((model_folder / "lora_config.json").read_text(encoding="utf-8"))["rank"]
    except (OSError, ValueError, TypeError, KeyError):
        return  # no LoRA (or an unreadable one: the load names the file)
    cause = (
        f"{BRANCH_CAUSE}: set model.lora_rank: {rank}"
        if branch
        else "its recipe.yaml was changed after training"
    )
    raise TrainedMisfit(
        f"{model_folder}: a LoRA (rank {rank}), but {recipe_path} says model.lora_rank: 0 ({cause})"
    )


def check_run_fits(checkpoint: Path, label: str = "--checkpoint") -> Any:
    """The saved recipe of ``checkpoint``'s run, once :func:`check_checkpoint_fits` passes
    for it. Reads config files only (no torch at import): the commands call it before any
    reward, verifier or model weights load, so that a misfit is said first, in seconds."""
    from dsharp.checkpoints import read_run_recipe, run_dir_of

    recipe = read_run_recipe(checkpoint, label)
    check_checkpoint_fits(checkpoint, recipe.model, run_dir_of(checkpoint) / "recipe.yaml")
    return recipe

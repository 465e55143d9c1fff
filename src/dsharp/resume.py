"""What a resumed run may change: a resumed run must train as it started, or its metrics,
checkpoints and ``recipe.yaml`` would describe a mix of two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsharp import checkpoints as ckpts

#: Fields a resume may change: how long it trains, how it saves and logs, how it is
#: evaluated and sampled afterwards, and where it is.
RESUMABLE_CHANGES = (
    "output_dir",
    "train.resume",
    "train.max_steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.trackers",
    "train.project",
    "eval",
    "sample",
)


def check_resume(recipe: Any, checkpoint: Path) -> None:
    """``ValueError`` when resuming ``recipe`` from ``checkpoint`` would not continue the run
    that wrote it: a recipe that differs from the run's saved one outside
    :data:`RESUMABLE_CHANGES`, or a checkpoint already past ``train.max_steps``."""
    from dsharp.config import recipe_to_dict
    from dsharp.methods.factory import with_method_defaults
    from dsharp.recipe_diff import first_difference, saved_recipe_data

    step = ckpts.checkpoint_step(checkpoint) or 0
    if step > recipe.train.max_steps:
        raise ValueError(
            f"train.max_steps: {recipe.train.max_steps}, but the checkpoint {checkpoint} is at "
            f"step {step}: raise max_steps to train on"
        )
    saved_path = ckpts.run_dir_of(checkpoint) / "recipe.yaml"
    saved = saved_recipe_data(saved_path) if saved_path.is_file() else None
    if saved is None:  # a checkpoint without its run's recipe: nothing to hold it to
        return
    now = recipe_to_dict(with_method_defaults(recipe))
    found = first_difference(saved, now, ignore=RESUMABLE_CHANGES)
    if found is not None:
        field, was, new = found
        raise ValueError(
            f"{field}: {new!r} differs from {was!r} in {saved_path}, the run being resumed; a "
            "resumed run trains as it started (it may change train.max_steps, checkpointing, "
            "logging, eval and sample): set it back, or start a new run in another output_dir"
        )

"""What a resumed run may change: a resumed run must train as it started, or its metrics,
checkpoints and ``recipe.yaml`` would describe a mix of two runs."""

from __future__ import annotations

import json
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


def planned_resume(recipe: Any) -> Path | None:
    """The checkpoint a run of ``recipe`` resumes from (None: a fresh run), once it is
    clear that the run continues the one it resumes; ``ValueError`` (or
    ``FileNotFoundError`` for a ``train.resume`` path that is no checkpoint) otherwise.
    Reads files only, so ``train`` asks it before any model loads."""
    run_dir, train = Path(recipe.output_dir), recipe.train
    if not train.resume and ckpts.list_checkpoints(run_dir):
        raise ValueError(_occupied(recipe))
    resume_from = ckpts.resolve_resume(run_dir, train.resume)
    if resume_from is not None:
        check_resume(recipe, resume_from)
    return resume_from


def launch_resume(recipe: Any) -> Path | None:
    """:func:`planned_resume` as the launch's first process finds it, on every process
    (itself without a launcher). That process holds the run folder and puts back a
    checkpoint a kill left aside (:func:`~dsharp.checkpoints.restore_aside_checkpoints`),
    which the others leave alone while it holds the folder: each finding its own, they
    could resume from different steps (or refuse a ``train.resume`` folder not back yet).
    A process that exchanged nothing (a rank without a process group) plans its own."""
    from dsharp.launch import broadcast_from_main, launcher_rank_zero

    unplanned = "unplanned"  # the others' offer: back only where no exchange took place
    chosen = broadcast_from_main(planned_resume(recipe) if launcher_rank_zero() else unplanned)
    return planned_resume(recipe) if isinstance(chosen, str) else chosen


def merged_weights_only(checkpoint: Path) -> bool:
    """Whether a checkpoint is one that ``dsharp merge`` wrote: merged UNet weights without
    the optimizer, scheduler and RNG state a run continues from."""
    if (ckpts.run_dir_of(checkpoint) / ckpts.MERGE_JSON).is_file():
        return True
    try:
        return "merged_from" in ckpts.read_trainer_state(checkpoint)
    except (OSError, ValueError):
        return False


def _merged_refusal(checkpoint: Path) -> str:
    """Why no run resumes from a merged checkpoint, and how to train from its weights."""
    return (
        f"train.resume: {checkpoint} holds merged weights only (dsharp merge wrote it, without "
        "the optimizer and scheduler state a run continues from): to train from them, copy the "
        f"base model's diffusers folder, put {Path(checkpoint) / 'model' / 'unet'} in place of "
        "its unet folder, and start a new run with model.pretrained set to that copy"
    )


def _occupied(recipe: Any) -> str:
    """Why a fresh run of ``recipe`` may not start in its ``output_dir``, which holds a run's
    checkpoints, and what to do instead: continue that run, when it is this recipe's (train it
    on, if it reached train.max_steps), or start elsewhere."""
    from dsharp.recipe_diff import saved_recipe_data

    run_dir = Path(recipe.output_dir)
    latest = ckpts.latest_checkpoint(run_dir)
    start_over = "choose another output_dir (or delete this one) to start over"
    if latest is not None and merged_weights_only(latest):
        return (
            f"output_dir: {run_dir} holds a merged model (dsharp merge), not a run to train "
            f"on: {start_over}"
        )
    try:
        step = ckpts.checkpoint_step(latest) or 0
    except ValueError:  # a damaged trainer_state.json: the folder is taken all the same
        return (
            f"output_dir: {run_dir} already holds a run's checkpoints ({latest.name}): {start_over}"
        )
    saved_path = run_dir / "recipe.yaml"
    saved = saved_recipe_data(saved_path) if saved_path.is_file() else None
    if saved is None:
        return (
            f"output_dir: {run_dir} already holds checkpoints (step {step}) of a run without a "
            f"readable recipe.yaml: {start_over}"
        )
    change = _identity_change(saved, recipe) or _first_change(saved, recipe)
    if change is not None:
        field, was, new = change
        values = f"is {was!r}, this recipe's {new!r}"
        differs = values if len(values) <= 60 and "\n" not in values else "differs"
        return (
            f"output_dir: {run_dir} already holds checkpoints of another run (step {step}; its "
            f"{field} {differs}): {start_over}"
        )
    train = saved.get("train")
    saved_max = train.get("max_steps") if isinstance(train, dict) else None
    finished = False  # the run reached the max_steps it was saved with
    if isinstance(saved_max, int) and not isinstance(saved_max, bool):
        finished = step >= saved_max
        state = "finished" if finished else "stopped"
        what = f"this recipe's {state} run (step {step} of {saved_max})"
    else:
        what = f"this recipe's run (step {step})"
    if step < recipe.train.max_steps:
        return (
            f"output_dir: {run_dir} already holds {what}: set train.resume=latest to continue "
            f"it, or {start_over}"
        )
    if finished and step == recipe.train.max_steps and _report_missing(run_dir, recipe, step):
        # killed during its report (SIGKILL, a power cut): a resume trains nothing and
        # writes it, as the command a Ctrl-C there prints does
        return (
            f"output_dir: {run_dir} already holds {what} without its report: set "
            f"train.resume=latest to write it, or {start_over}"
        )
    return (
        f"output_dir: {run_dir} already holds {what}: {start_over}, or raise train.max_steps "
        "with train.resume=latest to train it on"
    )


def _report_missing(run_dir: Path, recipe: Any, step: int) -> bool:
    """Whether ``recipe`` ends with a report that ``run_dir`` lacks for its checkpoint at
    ``step``: no readable ``eval-final.json`` of it."""
    from dsharp.report_files import FINAL_JSON, wants_report

    if not wants_report(recipe):
        return False
    try:
        final = json.loads((run_dir / FINAL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(final, dict) or final.get("step") != step


def _identity_change(saved: dict[str, Any], recipe: Any) -> tuple[str, Any, Any] | None:
    """The method or model, where the saved run's differs from ``recipe``'s: named before any
    other difference, since it says whose run it is (a saved recipe that no longer validates
    also differs in every default it lacks)."""
    from dsharp.model_names import absolute_model_source

    for section, key in (("method", "name"), ("model", "pretrained")):
        part = saved.get(section)
        was = part.get(key) if isinstance(part, dict) else part
        new = getattr(getattr(recipe, section), key)
        if key == "pretrained" and isinstance(was, str):  # a folder, however it was named
            was, new = absolute_model_source(was), absolute_model_source(new)
        if was != new:
            return f"{section}.{key}", was, new
    return None


def _first_change(saved: dict[str, Any], recipe: Any) -> tuple[str, Any, Any] | None:
    """The first field (with its saved and new values) where ``recipe`` does not train as
    the run whose saved recipe is ``saved``; None when it continues it (a resume may change
    only :data:`RESUMABLE_CHANGES`)."""
    from dsharp.methods.factory import with_method_defaults
    from dsharp.recipe_diff import first_difference
    from dsharp.recipe_io import recipe_to_dict

    now = recipe_to_dict(with_method_defaults(recipe))
    return first_difference(saved, now, ignore=RESUMABLE_CHANGES)


def check_resume(recipe: Any, checkpoint: Path) -> None:
    """``ValueError`` when resuming ``recipe`` from ``checkpoint`` would not continue the run
    that wrote it: a recipe that differs from the run's saved one outside
    :data:`RESUMABLE_CHANGES`, a checkpoint already past ``train.max_steps``, or one that
    ``dsharp merge`` wrote (weights only)."""
    from dsharp.recipe_diff import saved_recipe_data

    if merged_weights_only(checkpoint):
        raise ValueError(_merged_refusal(checkpoint))
    step = ckpts.resume_state(checkpoint)["step"]
    if step > recipe.train.max_steps:
        raise ValueError(
            f"train.max_steps: {recipe.train.max_steps}, but the checkpoint {checkpoint} is at "
            f"step {step}: raise max_steps to train on"
        )
    run_dir = ckpts.run_dir_of(checkpoint)
    saved_path = run_dir / "recipe.yaml"
    saved = saved_recipe_data(saved_path) if saved_path.exists() else None
    if saved is None:
        if run_dir.resolve() != Path(recipe.output_dir).resolve():
            return  # a branch from a checkpoint kept without its run: it starts its own
        missing = (
            f"{saved_path}: cannot be read as a recipe"
            if saved_path.exists()
            else f"{run_dir} holds checkpoints but no recipe.yaml"
        )
        raise ValueError(
            f"{missing}, so this resume cannot be checked against the run it continues: "
            "restore the file, or branch from the checkpoint into another output_dir "
            "(train.resume=CHECKPOINT)"
        )
    found = _first_change(saved, recipe)
    if found is not None:
        field, was, new = found
        raise ValueError(
            f"{field}: {new!r} differs from {was!r} in {saved_path}, the run being resumed; a "
            "resumed run trains as it started (it may change train.max_steps, checkpointing, "
            "logging, eval and sample): set it back, or start a new run in another output_dir"
        )

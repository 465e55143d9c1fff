"""What a training checks and takes before its model loads, in one place for ``dsharp train``
and ``dsharp.train``, so the two cannot drift: the recipe's checks (raising
:class:`~dsharp.recipe_errors.RecipeError`) and the run folder's lock (refused with
:class:`~dsharp.folder_lock.FolderInUseError`). Each front end says them its own way: the
command as one line and an exit status, the API as the exception."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from dsharp.launch import launcher_rank_zero
from dsharp.recipe_errors import RecipeError


def check_training(recipe: Any, *, source: str | None = None, evaluation: bool = True) -> list[str]:
    """``RecipeError`` (naming ``source``, the recipe's file) for the first thing a training
    of ``recipe`` would be refused for, checked without the model: a sampler recipe, a
    setting (:func:`~dsharp.preflight.check_before_loading`, fetching an uncached hub
    model's scheduler config alone for the schedule check; ``evaluation``: also what the
    post-training report needs), a missing input file, a run folder that holds another run
    or no checkpoint to resume, a value that looks like a key outside the rewards' options
    (a recipe changed in Python after it loaded: it would be saved in the run folder).
    Returns the recipe's notes, for the caller to show."""
    from dsharp.preflight import (
        check_before_loading,
        check_inputs,
        check_run_folder,
        recipe_notes,
    )
    from dsharp.recipe_io import refuse_key_like_values

    refuse_key_like_values(recipe, source)
    refuse_sampler_recipe(recipe, source)
    check_before_loading(recipe, source=source, evaluation=evaluation, fetch_scheduler=True)
    check_inputs(recipe, source=source)
    check_run_folder(recipe, source=source)
    return recipe_notes(recipe)


def refuse_sampler_recipe(recipe: Any, source: str | None = None) -> None:
    """A recipe with neither a method nor a train section whose sampler is a search
    (``recipes/mini/demon.yaml``) is one for ``dsharp eval --recipe``: training it would
    start a run of the default method, at default length, that it never asked for. A
    training recipe that samples its report with a search has a train section. (The sections
    the file or an override set are the recipe's ``model_fields_set``.)"""
    trains = {"method", "train"} & recipe.model_fields_set
    if not trains and recipe.sample.method != "default":
        raise RecipeError(
            f"a sampler recipe (sample.method: {recipe.sample.method}; no method or train "
            f"section): run it with dsharp eval --recipe {source or 'FILE'} (to train with it "
            "anyway, set method.name)",
            source=source,
        )


def claimed_run_folder(recipe: Any) -> AbstractContextManager[Any]:
    """The run folder (``output_dir``, made if need be) held for the ``with`` block by the
    launch's first process, or the only one: from before the model loads until the report
    is written, so a second training into it is refused at once (``FolderInUseError``) and
    cannot resume it mid-report. The other processes of a launch take nothing."""
    from dsharp import folder_lock  # looked up on each call: tests record the claims

    if not launcher_rank_zero():
        return nullcontext()
    return folder_lock.claimed_folder(Path(recipe.output_dir), "output_dir")

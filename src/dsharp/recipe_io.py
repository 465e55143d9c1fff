"""Loading and saving recipes: ``load_recipe`` (YAML plus ``a.b.c=value`` overrides, see
:mod:`dsharp.recipe_yaml`) and ``recipe_from_dict`` validate into the schema of
:mod:`dsharp.config` with one-line errors (see :mod:`dsharp.recipe_errors`);
``recipe_to_dict``, ``recipe_to_yaml`` and ``save_recipe`` write a recipe back, secrets
redacted. Reward names are checked against the plugin registry only after the rest of the
recipe is valid, so structural mistakes are reported fast."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dsharp.config import _DEFER_REWARD_NAMES, _SKIP_FILE_CHECKS, Recipe, check_reward_name
from dsharp.recipe_errors import RecipeError, _dotted, _first_error, _show
from dsharp.recipe_yaml import _read_yaml, apply_overrides


def recipe_from_dict(
    data: Any,
    *,
    source: str | None = None,
    overrides: Sequence[str] = (),
    recipe_name: str | None = None,
    validate_files: bool = True,
) -> Recipe:
    """Validate a parsed recipe (plus overrides); every failure is a one-line ``RecipeError``.

    Reward names are checked against the plugin registry last, so that structural
    mistakes never wait for plugins to load. ``validate_files=False`` skips the checks that
    local paths exist (for the saved recipe of a run made elsewhere) and those only training
    anew needs (a saved run's recipe may predate them).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"expected a mapping at the top level, got {_show(data)}", source=source)
    data = copy.deepcopy(data)
    applied = apply_overrides(data, overrides, source)
    try:
        context = {_DEFER_REWARD_NAMES: True, _SKIP_FILE_CHECKS: not validate_files}
        recipe = Recipe.model_validate(data, context=context)
    except ValidationError as e:
        raise _first_error(e, source, applied) from None
    lists = [("rewards", recipe.rewards), ("eval", "rewards", recipe.eval.rewards or [])]
    for *prefix, specs in lists:
        for i, spec in enumerate(specs):
            try:
                check_reward_name(spec.name)
            except ValueError as e:
                loc = (*prefix, i, "name")
                override = _override_of(applied, loc)
                raise RecipeError(
                    str(e), source=source, field=_dotted(loc), override=override
                ) from None
    _check_differentiable_rewards(recipe, source)
    if validate_files:  # a saved run's recipe is already in its run folder
        refuse_key_like_values(recipe, source, applied)
        # a run trained before this refusal is still sampled and evaluated (IterPO itself
        # refuses to train on, on resume)
        _check_zscored_backprop_rewards(recipe, source, applied)
    if recipe_name is not None and "{recipe_name}" in recipe.output_dir:
        recipe.output_dir = recipe.output_dir.replace("{recipe_name}", recipe_name)
    if recipe.output_dir.startswith("~"):  # as every other path field: not a folder named ~
        recipe.output_dir = str(Path(recipe.output_dir).expanduser())
    return recipe


def refuse_key_like_values(
    recipe: Recipe, source: str | None = None, applied: Sequence[tuple[tuple, str]] = ()
) -> None:
    """A field outside the rewards' options whose value looks like an API key (the sure rule
    of :mod:`dsharp.redaction`: a UUID-named run is no key here) or holds a URL's credentials
    is refused, naming the field, not the value: it would be saved in the run folder, and
    saving it as ``<redacted>`` instead would lose an ordinary value (a folder, a model) that
    only looks like one. The rewards' options are saved with such values redacted (a reward
    built from the saved recipe asks for them again). A value that names a file or folder
    that exists (one named by its sha256, a resumed run's ``output_dir`` of hex digits) is no
    key, nor is a base64 ``data:`` URI (an inline image, whose payload looks random)."""
    from dsharp.redaction import holds_url_credentials, is_data_uri, looks_like_key

    def secret(value: str) -> str | None:
        if holds_url_credentials(value):
            return "holds a URL's credentials (not shown)"
        if looks_like_key(value) and not is_data_uri(value):  # an inline image is no key
            return "looks like an API key or token (not shown)"
        return None

    def walk(value: Any, loc: tuple) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*loc, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        elif isinstance(value, str) and (why := secret(value)) and not _names_a_path(value):
            override = _override_of(applied, loc)
            raise RecipeError(
                f"{why}: keys belong in environment variables, not recipes",
                source=source,
                field=_dotted(loc),
                override=override,
            )

    data = recipe.model_dump(mode="json", exclude={"rewards": True, "eval": {"rewards"}})
    walk(data, ())


def _names_a_path(value: str) -> bool:
    """Whether ``value`` names a file or folder that exists (relative ones from here)."""
    from dsharp.hub import user_path

    try:
        return user_path(value).exists()
    except (OSError, ValueError):  # a name too long, a NUL: no path
        return False


def _override_of(applied: Sequence[tuple[tuple, str]], loc: tuple) -> str:
    """The override (as typed) that set the field at ``loc`` or a section holding it; "" for
    one the recipe file set."""
    return next((text for path, text in applied if loc[: len(path)] == path), "")


def _backprop_method(recipe: Recipe) -> Any:
    """The recipe's method spec where it back-propagates through the reward (ReFL/IterPO),
    else None."""
    from dsharp.methods.registry import method_specs

    spec = method_specs().get(recipe.method.name)
    return spec if getattr(spec, "needs_differentiable_reward", False) else None


def _check_differentiable_rewards(recipe: Recipe, source: str | None) -> None:
    """Methods that back-propagate through the reward (ReFL/IterPO) refuse a weighted
    reward that is not differentiable, before any model loads."""
    from dsharp.rewards.plugins import get_reward_info

    spec = _backprop_method(recipe)
    if spec is None:
        return
    for i, reward in enumerate(recipe.rewards):
        if reward.weight and not get_reward_info(reward.name).differentiable:
            raise RecipeError(
                f"method {spec.name!r} needs differentiable rewards; {reward.name!r} is not "
                "(see `dsharp rewards list`)",
                source=source,
                field=f"rewards.{i}.name",
            )


def _check_zscored_backprop_rewards(
    recipe: Recipe, source: str | None, applied: Sequence[tuple[tuple, str]] = ()
) -> None:
    """Methods that back-propagate ReFL's ``relu(margin - score)`` (IterPO) refuse a weighted
    reward with ``normalize: batch_zscore``: a micro-batch's z-scores sum to zero, so where
    every one is below the margin (always, up to 5 samples at margin 2; and with one sample
    per process, its z-score is 0) the loss is a constant and the reward trains nothing;
    where some are above it, the loss's gradient is that of their z-scores, which it lowers."""
    spec = _backprop_method(recipe)
    if spec is None:
        return
    for i, reward in enumerate(recipe.rewards):
        if reward.weight and reward.normalize == "batch_zscore":
            loc = ("rewards", i, "normalize")
            override = _override_of(applied, loc)
            raise RecipeError(
                f"method {spec.name!r} back-propagates the reward, and batch_zscore scores "
                "sum to zero over each micro-batch: its loss is constant below the margin "
                "(and lowers the samples above it), so this reward trains nothing useful "
                "(use normalize: none)",
                source=source,
                field=f"rewards.{i}.normalize",
                override=override,
            )


def is_study_data(data: Any) -> bool:
    """A parsed YAML file is a study (:mod:`dsharp.study`), not a recipe, when it has
    top-level ``rows``."""
    return isinstance(data, dict) and "rows" in data


def load_recipe(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), *, validate_files: bool = True
) -> Recipe:
    """Load and validate a YAML recipe; ``overrides`` are ``a.b.c=value`` strings.

    ``validate_files=False`` skips the checks that local paths exist (a saved run recipe).
    """
    if isinstance(overrides, str):  # else each character would be read as an override
        raise TypeError(f"overrides: expected a list of KEY=VALUE strings, got {overrides!r}")
    path = Path(path)
    data = _read_yaml(path)
    if is_study_data(data):
        raise RecipeError(
            "a study, not a recipe (it has `rows`): run it with dsharp reproduce", source=str(path)
        )
    return recipe_from_dict(
        data,
        source=str(path),
        overrides=overrides,
        recipe_name=path.stem,
        validate_files=validate_files,
    )


def recipe_to_dict(recipe: Recipe, redact: bool = True) -> dict[str, Any]:
    """The recipe as plain YAML/JSON-able data.

    With ``redact``, secret reward options (those the reward declares, those whose name
    looks secret, and any value that looks like a key: see :mod:`dsharp.redaction`) become
    ``"<redacted>"``. Secrets belong in environment variables, not recipes; a key-like value
    in any other field was refused when the recipe loaded.
    """
    from dsharp.redaction import redact_reward_spec

    data = recipe.model_dump(mode="json")
    if redact:
        data["rewards"] = [redact_reward_spec(spec) for spec in data["rewards"]]
        if data["eval"]["rewards"]:
            data["eval"]["rewards"] = [redact_reward_spec(s) for s in data["eval"]["rewards"]]
    return data


SAVED_RECIPE_HEADER = "# The validated recipe of this run, written by dsharp"
"""The first line of every recipe a run saves (``recipe.yaml``): no command to run it by."""


def recipe_to_yaml(recipe: Recipe, redact: bool = True) -> str:
    """The recipe as YAML text (redacted by default), loadable by :func:`load_recipe`."""
    header = SAVED_RECIPE_HEADER
    header += " (secret reward options redacted).\n" if redact else ".\n"
    return header + yaml.safe_dump(recipe_to_dict(recipe, redact=redact), sort_keys=False)


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write the (redacted) recipe as YAML atomically: a temp file, then ``os.replace``."""
    from dsharp.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, recipe_to_yaml(recipe, redact=True))
    return path

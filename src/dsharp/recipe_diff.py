"""Where two recipes differ, for the places that must refuse to mix two runs in one folder:
a study row whose folder holds another setting's run, a resume with another recipe."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def saved_recipe_data(path: Path) -> dict[str, Any] | None:
    """A run's saved ``recipe.yaml`` as data with every field of today's schema: read through
    it, so that a field added since the run was saved (at its default) is no difference. As
    written when it no longer validates; None when it cannot be read as a mapping."""
    from dsharp.recipe_errors import RecipeError
    from dsharp.recipe_io import recipe_from_dict, recipe_to_dict
    from dsharp.recipe_yaml import parse_yaml

    try:
        raw = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, RecipeError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return recipe_to_dict(recipe_from_dict(raw, source=str(path), validate_files=False))
    except ValueError:  # RecipeError included: compare what was written
        return raw


def first_difference(
    saved: dict[str, Any], now: dict[str, Any], ignore: Iterable[str] = ()
) -> tuple[str, Any, Any] | None:
    """``(dotted field, saved value, current value)`` of the first difference between two
    recipes as data, leaving out the ``ignore`` fields (dotted paths); None when they agree."""
    saved, now = _without(saved, ignore), _without(now, ignore)
    where = _first(saved, now)
    if where is None:
        return None
    return where, _lookup(saved, where), _lookup(now, where)


def _without(data: dict[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    from dsharp.model_names import absolute_model_source

    data = json.loads(json.dumps(data, default=str))  # a deep copy, in JSON's types
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("pretrained"), str):
        # a run saved with a relative folder (before they were saved absolute) is the same
        # model as that folder named absolutely
        model["pretrained"] = absolute_model_source(model["pretrained"])
    for dotted in ignore:
        *parents, last = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return data


def _first(saved: Any, now: Any, loc: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in [*saved, *[k for k in now if k not in saved]]:
            inner = f"{loc}.{key}" if loc else str(key)
            if key not in saved or key not in now:
                return inner
            found = _first(saved[key], now[key], inner)
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        for i, (a, b) in enumerate(zip(saved, now, strict=True)):
            found = _first(a, b, f"{loc}.{i}")
            if found:
                return found
        return None
    return None if saved == now else (loc or "(top level)")


def _lookup(data: Any, dotted: str) -> Any:
    node = data
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node

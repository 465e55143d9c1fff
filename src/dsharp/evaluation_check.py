"""Whether a dict read from an evaluation JSON has the shape dsharp's readers rely on.

A file edited by hand, or written by another version, may hold a field of another type
(``metrics`` a list, an image's ``seed`` null); checked once where a file is read, it is
refused in one line naming the field, instead of failing later in a table or a paired
difference with a traceback, or being shown as if it were a score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

#: Top-level fields that hold one number (or null: NaN as JSON writes it).
NUMBER_FIELDS = (
    "overall",
    "strict",
    "nfe_per_image",
    "reward_evals_per_image",
    "train_reward_evals",
)
#: Top-level fields that hold a count of images: a whole number (a table shows it, the
#: reward-eval budget multiplies by it; never NaN, so never null).
COUNT_FIELDS = ("n_images", "n_scored")
#: Top-level fields that map a name to a number (or null).
NUMBER_MAPS = ("categories", "constraints", "reward_weights")
#: Top-level fields that hold a name (or null).
TEXT_FIELDS = ("bench", "label", "reward")


def evaluation_problem(data: dict[str, Any]) -> str | None:
    """The first field that is not as an evaluation writes it (``field: what is wrong``), or
    None where every field dsharp reads is. Fields dsharp does not read are not checked."""
    checks: list[Callable[[dict[str, Any]], str | None]] = [
        _number_fields,
        _count_fields,
        _text_fields,
        _rewards_problem,
        _reward_specs_problem,
        _metrics_problem,
        _number_maps,
        _groups_problem,
        _images_problem,
    ]
    return _first_problem(check(data) for check in checks)


def _first_problem(problems: Iterable[str | None]) -> str | None:
    """The first problem found (checks are lazy: later ones may assume earlier passed)."""
    return next((problem for problem in problems if problem is not None), None)


def _describe(value: Any) -> str:
    """A value's JSON type in words, for messages that say what was found instead."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"the text {shown!r}"
    if isinstance(value, int | float):
        return "a number"
    return "a list" if isinstance(value, list) else "an object"


def _is_number(value: Any, *, allow_null: bool = True) -> bool:
    """A JSON number (true/false is not one); null stands for NaN where allowed."""
    if value is None:
        return allow_null
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_fields(data: dict[str, Any]) -> str | None:
    for key in NUMBER_FIELDS:
        if key in data and not _is_number(data[key]):
            return f"{key}: {_describe(data[key])}, not a number"
    return None


def _count_fields(data: dict[str, Any]) -> str | None:
    for key in COUNT_FIELDS:
        if key in data and not _is_count(data[key]):
            return f"{key}: {_describe(data[key])}, not a count"
    return None


def _is_count(value: Any) -> bool:
    """A whole number >= 0 (``4.0`` too: JSON does not tell 4 from 4.0 in every writer)."""
    number = _is_number(value, allow_null=False) and math.isfinite(value)
    return number and value >= 0 and value == int(value)


def _text_fields(data: dict[str, Any]) -> str | None:
    for key in TEXT_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"{key}: {_describe(data[key])}, not a name"
    return None


def _list_problem(
    data: dict[str, Any], key: str, what: str, item_problem: Callable[[Any, str], str | None]
) -> str | None:
    """``key`` present and not a list (``what``: what it should be), or the first of its
    items ``item_problem`` finds wrong (given the item and where it is, ``key[i]``)."""
    items = data.get(key)
    if items is None:
        return None
    if not isinstance(items, list):
        return f"{key}: {_describe(items)}, not {what}"
    return _first_problem(item_problem(item, f"{key}[{i}]") for i, item in enumerate(items))


def _rewards_problem(data: dict[str, Any]) -> str | None:
    return _list_problem(data, "rewards", "a list of names", _name_problem)


def _reward_specs_problem(data: dict[str, Any]) -> str | None:
    """``reward_specs``: reward key -> the reward's settings (a name, and options an object)."""
    problem = _mapping_problem(data, "reward_specs")
    if problem is not None:
        return problem
    for key, spec in data.get("reward_specs", {}).items():
        where = f"reward_specs.{key}"
        if not isinstance(spec, dict):
            return f"{where}: {_describe(spec)}, not an object"
        if not isinstance(spec.get("name"), str):
            return f"{where}.name: {_describe(spec.get('name'))}, not a name"
        if "options" in spec and not isinstance(spec["options"], dict):
            return f"{where}.options: {_describe(spec['options'])}, not an object"
        if "weight" in spec and not _is_number(spec["weight"], allow_null=False):
            return f"{where}.weight: {_describe(spec['weight'])}, not a number"
        if spec.get("normalize") is not None and not isinstance(spec["normalize"], str):
            return f"{where}.normalize: {_describe(spec['normalize'])}, not a name"
    return None


def _name_problem(name: Any, where: str) -> str | None:
    return None if isinstance(name, str) else f"{where}: {_describe(name)}, not a name"


def _mapping_problem(data: dict[str, Any], key: str) -> str | None:
    """``key`` present and not an object (a table reads its entries by name)."""
    if key in data and not isinstance(data[key], dict):
        return f"{key}: {_describe(data[key])}, not an object"
    return None


def _metrics_problem(data: dict[str, Any]) -> str | None:
    """Each metric is an object with a ``mean`` (a number, or null for none scored)."""
    problem = _mapping_problem(data, "metrics")
    if problem is not None:
        return problem
    for name, stats in data.get("metrics", {}).items():
        if not isinstance(stats, dict):
            return f"metrics.{name}: {_describe(stats)}, not an object with a mean"
        if "mean" not in stats:
            return f"metrics.{name}: no mean"
        if not _is_number(stats["mean"]):
            return f"metrics.{name}.mean: {_describe(stats['mean'])}, not a number"
    return None


def _number_map_problem(values: Any, key: str) -> str | None:
    if not isinstance(values, dict):
        return f"{key}: {_describe(values)}, not an object"
    for name, value in values.items():
        if not _is_number(value):
            return f"{key}.{name}: {_describe(value)}, not a number"
    return None


def _number_maps(data: dict[str, Any]) -> str | None:
    return _first_problem(_number_map_problem(data[k], k) for k in NUMBER_MAPS if k in data)


def _groups_problem(data: dict[str, Any]) -> str | None:
    """``groups``: grouping -> label -> mean."""
    return _mapping_problem(data, "groups") or _first_problem(
        _number_map_problem(labels, f"groups.{grouping}")
        for grouping, labels in data.get("groups", {}).items()
    )


def _images_problem(data: dict[str, Any]) -> str | None:
    """``images``: a list of per-image scores, each keyed by its prompt and seed."""
    return _list_problem(data, "images", "a list", _image_problem)


def _image_problem(entry: Any, where: str) -> str | None:
    if not isinstance(entry, dict):
        return f"{where}: {_describe(entry)}, not an object"
    for key in ("prompt", "seed"):
        if key not in entry:
            return f"{where}: no {key}"
    if not isinstance(entry["prompt"], str):
        return f"{where}.prompt: {_describe(entry['prompt'])}, not text"
    seed = entry["seed"]
    whole = _is_number(seed, allow_null=False) and math.isfinite(seed) and seed == int(seed)
    if not whole:
        return f"{where}.seed: {_describe(seed)}, not a whole number"
    if not _is_number(entry.get("score")):
        return f"{where}.score: {_describe(entry['score'])}, not a number"
    if entry.get("category") is not None and not isinstance(entry["category"], str):
        return f"{where}.category: {_describe(entry['category'])}, not a name"
    return None

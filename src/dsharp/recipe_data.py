"""Dataset rules of a recipe's ``data`` section: how ``data.dataset`` is read (an image
folder, a ``.jsonl`` file or a Hugging Face dataset), which of them have splits, the image
column of a folder, and ``data.balance``. The schema (:mod:`dsharp.config`) validates with
them, and the data loaders (:mod:`dsharp.data`, :mod:`dsharp.preflight`) read by them, so
that a recipe is checked by the same rules it is later read by."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dsharp.hub import user_path
from dsharp.recipe_errors import _show, unknown_name_message

BALANCE_MODES = ("prompt", "category")
"""The named ways ``data.balance`` draws shapes prompts (it also takes category weights)."""


def check_balance(value: Any) -> str | dict[str, float]:
    """``data.balance`` as a mode name or as ``{category: weight}`` with finite weights >= 0,
    at least one above 0; a clear error otherwise."""
    from dsharp.shapes.grammar import CATEGORIES

    if isinstance(value, str) and value in BALANCE_MODES:
        return value
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected 'prompt', 'category' or a mapping of category -> weight, got {_show(value)}"
        )
    weights: dict[str, float] = {}
    for name, weight in value.items():
        if name not in CATEGORIES:
            raise ValueError(unknown_name_message("category", name, CATEGORIES))
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{name}: weight must be a number >= 0, got {_show(weight)}")
        weights[name] = float(weight)
    if not any(weights.values()):
        raise ValueError("at least one category needs a weight above 0")
    return weights


SHAPES_SPLITS = ("train", "grammar")
"""Prompt sources of ``data.generator: shapes`` (see :class:`DataConfig`)."""

DEFAULT_SPLIT = "train"
DEFAULT_IMAGE_COLUMN = "image"
#: The image column of a folder's ``metadata.jsonl`` unless ``data.image_column`` says otherwise.
FOLDER_IMAGE_COLUMN = "file_name"


def folder_image_column(image_column: str) -> str:
    """The image column of a folder's ``metadata.jsonl``: ``data.image_column``, or
    ``file_name`` (Hugging Face imagefolder's name) where the recipe leaves it at its default."""
    return FOLDER_IMAGE_COLUMN if image_column == DEFAULT_IMAGE_COLUMN else image_column


def dataset_kind(dataset: str, dataset_type: str = "auto") -> str:
    """How ``data.dataset`` is read: ``folder`` (images with captions), ``jsonl`` or ``hf``
    (a hub name, or a folder that ``datasets``' ``save_to_disk`` wrote); ``auto`` tells them
    apart by what is on disk."""
    if dataset_type != "auto":
        return dataset_type
    path = user_path(dataset)
    saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    if path.is_dir() and not saved:
        return "folder"
    return "jsonl" if path.suffix == ".jsonl" else "hf"


def without_splits(dataset: str, dataset_type: str) -> str | None:
    """What ``data.dataset`` is when it has no splits for ``data.split`` to pick from (it is
    read whole), else None."""
    kind = dataset_kind(dataset, dataset_type)
    if kind == "folder":
        return f"data.dataset {dataset} is an image folder, read whole"
    if kind == "jsonl":
        return f"data.dataset {dataset} is a .jsonl file, read whole"
    path = user_path(dataset)
    if path.is_dir() and not (path / "dataset_dict.json").exists():
        return f"data.dataset {dataset} is one saved dataset without splits, read whole"
    return None

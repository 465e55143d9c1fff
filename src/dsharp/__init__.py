"""dsharp: Diffusion-Sharpening and its baselines for text-to-image diffusion models.

The Python API (see :mod:`dsharp.api`)::

    recipe = dsharp.load_recipe("recipes/quickstart.yaml", ["train.max_steps=2"])
    run = dsharp.train(recipe)
    model = dsharp.load_model(run)
    images = dsharp.sample(model, ["a red circle"], steps=25).images
    result = dsharp.evaluate_model(model, "shapes", limit=2, seeds=1)

Names load on first use (module ``__getattr__``), so ``import dsharp`` imports no torch.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing would double this module's import time

__version__ = "0.1.0.dev0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "load_recipe": "dsharp.api",
    "train": "dsharp.api",
    "load_model": "dsharp.api",
    "sample": "dsharp.api",
    "get_reward": "dsharp.api",
    "evaluate_model": "dsharp.api",
    "Recipe": "dsharp.config",
    "FolderInUseError": "dsharp.folder_lock",
    "RecipeError": "dsharp.recipe_errors",
    "RewardError": "dsharp.rewards.base",
    "RewardImages": "dsharp.rewards.base",
}

#: Written out (not built from ``_EXPORTS``) so that linters and editors read it.
__all__ = [
    "FolderInUseError",
    "Recipe",
    "RecipeError",
    "RewardError",
    "RewardImages",
    "__version__",
    "evaluate_model",
    "get_reward",
    "load_model",
    "load_recipe",
    "sample",
    "train",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from typing import Any

    from dsharp.api import evaluate_model, get_reward, load_model, load_recipe, sample, train
    from dsharp.config import Recipe
    from dsharp.folder_lock import FolderInUseError
    from dsharp.recipe_errors import RecipeError
    from dsharp.rewards.base import RewardError, RewardImages


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dsharp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""The built-in model names and how a recipe's ``model.pretrained`` is written down, without
importing torch: ``dsharp runs``, recipe comparisons and preflight checks read them.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED = {"dsharp-mini": "dsharp-mini"}
"""Model names that resolve to folders shipped inside the package (``dsharp/assets``)."""

MINI_INIT_NAMES = {"plain": "dsharp-mini-init", "binding": "dsharp-mini-init-binding"}
"""The ``model.pretrained`` name of the untrained dsharp-mini with each text-encoder kind:
``plain``, the shipped dsharp-mini's encoder (no layers, each word read on its own), and
``binding``, one hand-set layer that adds the previous two words to each word (see
:func:`dsharp.models.mini.make_binding_text_encoder`)."""

MINI_INITS = {name: kind for kind, name in MINI_INIT_NAMES.items()}
"""The untrained dsharp-mini (what ``recipes/mini/pretrain.yaml`` trains) by name, to its
text-encoder kind: built on first use in the user cache (see
:func:`dsharp.models.mini.ensure_mini_init`)."""


def is_builtin(pretrained: str) -> bool:
    """Whether ``pretrained`` names a built-in model (these win over a folder of that name)."""
    return pretrained in EMBEDDED or pretrained in MINI_INITS


def absolute_model_source(pretrained: str) -> str:
    """``pretrained`` as an absolute path when it names a local folder by a relative one, so
    that a run's saved recipe finds its base model from any folder (``dsharp eval
    --checkpoint RUN`` run elsewhere); built-in names and hub ids unchanged."""
    if is_builtin(pretrained):
        return pretrained
    path = Path(pretrained).expanduser()
    return os.path.abspath(path) if path.exists() else pretrained
